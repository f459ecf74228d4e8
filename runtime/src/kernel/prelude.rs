//! The WGSL prelude: what the runtime puts around a user kernel so that it can dereference
//! host pointers. Owns the kernel ABI (bindings, the per-round immediates, the control
//! buffer, the accessors) and nothing else; `launch.rs` drives it.
//!
//! # The kernel ABI
//!
//! A user kernel is WGSL defining `fn <entry>(id: u32)`, called once per invocation
//! `id in 0..n`. It reaches memory only through the accessors below; pointers are host
//! addresses (`u64`). The generated module is:
//!
//! ```text
//! <user source>  (first, so that messages give its own line numbers; WGSL declarations may
//!                 come in any order)
//! <layout constants of pagetable.rs>  <UNIMEM_BASE, UNIMEM_ARENA_BYTES, log sizes>
//! bindings 0, 1, 2, frames (pagetable.rs), then at UNIMEM_FIRST_ARG_BINDING:
//!   +0 unimem_args : array<vec4<u32>, ARGS_BYTES / 16>  uniform: the poison list, then the launch arguments
//!   +1 unimem_ctl  : array<atomic<u32>>   control counters
//!   +2 unimem_spill: array<u32>           spill slots (see `spill.rs`)
//!   +3 unimem_ids  : array<vec2<u32>>     the id lists
//!   +4 unimem_alog : array<u32>           atomic-result log (only when the kernel uses atomics)
//!   in place, from +5: the heap's windows as array<u32>, then the same again as array<u64>
//! [PRELUDE below]  the entry point `unimem_main`, which calls the user's fn.
//! ```
//!
//! Argument buffer (a uniform buffer of `ARGS_BYTES`, as `u32` words; uniform loads cost far
//! less than storage loads on lavapipe, and every accessor call reads arguments or nothing
//! else of it): from `ARGS_POISON_AT`, `POISON_CAPACITY` words
//! of poison list (blocks the runtime found to hold no live allocation: an access there is
//! an error, not a fault; `NO_BLOCK` where unused), at `ARGS_COUNT_AT` how many words of
//! arguments the launch passed (reading another is an error), then from `ARGS_AT` the launch
//! arguments.
//! Control buffer: `CTL_PENDING_COUNT` (entries appended to the output list this round).
//!
//! Id buffer: two lists of `n` entries of `IDS_ENTRY_WORDS` words, used in turn as a round's
//! input list (the ids it runs; none in a launch's first round, which runs `0..n`) and its
//! output list (the invocations that stopped). An output entry is
//! `(id | flags | kind << KIND_SHIFT, slot | site << SITE_SHIFT)`: the flags are `ESCALATE*`
//! (a log was full: restart in a spill round); `kind` is 0 for a fault, else the
//! `KERNEL_ERROR_*` it made; `site` is the access or loop of the user's code it stopped at
//! (`sites.rs`, 0 if unknown); `slot | site << SITE_SHIFT` is `NO_SLOT` for an escalation,
//! and `slot` is the invocation's index in the round, and entry
//! `slot` of the round's *spare* list (the other list; each invocation read its own input
//! entry, if any, before overwriting it) holds the address that stopped it, low word first.
//! The faulted block is the address's. Written as one `vec2` store each: on lavapipe every
//! store site costs every invocation a loop over the lanes, masked or not, so a stopped
//! invocation is reported with one atomic and two stores, and errors, with their address, by
//! the ordinary round itself.
//!
//! # One pipeline per round mode
//!
//! The module is compiled once per mode (`spill::MODE_*`, the constant
//! `UNIMEM_PIPELINE_MODE`): the ordinary pipeline holds no spill or commit code. This matters
//! on lavapipe, which runs both sides of every branch under a lane mask: code that never runs
//! still costs its full time, and a masked store or atomic is a loop over the lanes. The
//! prelude therefore keeps its cold paths short, reports a stopped invocation with one atomic
//! and two plain stores, marks dirty frames without atomics, and flushes the store log in a
//! loop (see `unimem_flush_log`, which also turns lavapipe's loop budget into an error).
//!
//! # Restartability (docs/MEMORY-MODEL.md states the rule for users)
//!
//! An invocation runs in a round until it completes, faults, or errs. A fault (a block without
//! a device copy) stops it: every later accessor call returns 0 and does nothing, the entry
//! point appends its id to the output list, and the runtime replays it from the start next
//! round. So that a replay never applies an effect twice:
//! - **stores** go to a private per-invocation log (`UNIMEM_STORE_LOG` words), which loads
//!   consult first (an invocation reads its own writes); the log is written to memory, and the
//!   blocks marked dirty, only when the invocation completes;
//! - **atomics** execute at once (their effect is visible to other invocations); the result
//!   of the k-th atomic of an invocation is saved in `unimem_alog` (`UNIMEM_ATOMIC_LOG` per
//!   invocation), and a replay returns the saved result instead of executing it again.
//!
//! When a store finds the log full, or an atomic finds the atomic log full, the invocation
//! stops *before* the access and is appended to the output list with `UNIMEM_ESCALATE`
//! set: the runtime restarts it in a **spill round** (`MODE_SPILL`), where both logs live in
//! a slot of `unimem_spill` sized for it (and, once some invocation's stores overflowed, a
//! hash table for stores), growing until it fits; with tables, a **commit pass**
//! (`MODE_COMMIT`) then writes those of completed slots. `spill.rs` owns the slot layout.
//! So no invocation is ever unreplayable.
//! A replay must take the same path as the first run up to the fault (the kernel is a function
//! of its id, its arguments, memory no other invocation of the launch writes, and its atomics'
//! results), which holds for kernels without data races.
//!
//! **In place the effects are direct** (`UNIMEM_DIRECT`, set for in-place modules): every
//! live block is mapped before the first dispatch, so an invocation stops only on an error,
//! and there is nothing to replay and nothing to log. Stores go straight to memory and
//! atomics just execute; loads skip the log lookup; the flush loop and the atomic log are
//! compiled out (`UNIMEM_DIRECT` is a constant, so the driver's compiler removes the logged
//! paths), and no in-place invocation is ever escalated. On lavapipe, where every access
//! site costs every invocation whether it runs or not, this takes a fifth off a BFS.
//! docs/MEMORY-MODEL.md states what an invocation that fails then leaves behind.

use std::fmt::Write as _;

use super::objects;
use super::spill::{self, SlotLayout, MODE_COMMIT};
use crate::device::pagetable::{KERNEL_ERROR_OUT_OF_RANGE, KERNEL_ERROR_READ_ONLY};

/// Kernel error kind: an access not aligned to its size (4 bytes; 8 for the 64-bit accessors).
pub const KERNEL_ERROR_MISALIGNED: u32 = 3;
/// Kernel error kind: an invocation made more accesses in one round than the step limit.
pub const KERNEL_ERROR_RUNAWAY: u32 = 4;
/// Kernel error kind: an access to a block that holds no live allocation (freed memory).
pub const KERNEL_ERROR_FREED: u32 = 5;
/// Kernel error kind: the driver cut the invocation's loops short (lavapipe runs at most
/// 65535 loop iterations per batch of invocations run together, in all their loops).
pub const KERNEL_ERROR_LOOP_BUDGET: u32 = 6;
/// Kernel error kind: an invocation ran more loop iterations in one round than the step limit
/// (`guard.rs`: every loop of the user's code counts them).
pub const KERNEL_ERROR_RUNAWAY_LOOP: u32 = 7;
/// Kernel error kind: an invocation read an argument word the launch did not pass (the stop
/// address is the word's index).
pub const KERNEL_ERROR_ARGUMENT: u32 = 8;

/// Words of an invocation's private store log.
pub const STORE_LOG: u32 = 32;
/// Saved atomic results per invocation.
pub const ATOMIC_LOG: u32 = 7;

/// Control word: entries appended to the output list this round.
pub const CTL_PENDING_COUNT: usize = 0;
/// Words of the control buffer.
pub const CTL_WORDS: usize = 4;
/// Flag on an output-list entry: the invocation's logs overflowed; restart it in a spill round.
pub const ESCALATE: u32 = 1 << 31;
/// With [`ESCALATE`]: it was the store log (the spill slots need a store table).
pub const ESCALATE_STORES: u32 = 1 << 30;
/// Bit of an output-list entry's first word where the error kind starts (5 bits; 0: a fault).
pub const KIND_SHIFT: u32 = 24;
/// The invocation id in an id-list entry's first word.
pub const ID_MASK: u32 = (1 << KIND_SHIFT) - 1;
/// Second word of an output-list entry that has no stop address (escalated, or carried over).
pub const NO_SLOT: u32 = u32::MAX;
/// Bit of an output-list entry's second word where the stop's site starts (`sites.rs`; 0: no
/// site); below it, the slot (below `launch::CHUNK`, 2^23). Sites go up to
/// `sites::MAX_SITES`, so that a word never reads as [`NO_SLOT`].
pub const SITE_SHIFT: u32 = 23;
/// The slot in an output-list entry's second word.
pub const SLOT_MASK: u32 = (1 << SITE_SHIFT) - 1;
/// Bit of the fault buffer's error-kind word where a spill round's error site starts.
pub const ERROR_SITE_SHIFT: u32 = 16;
/// Argument-buffer word: first entry of the poison list (unused entries hold [`NO_BLOCK`]).
pub const ARGS_POISON_AT: usize = 0;
/// Entries of the poison list.
pub const POISON_CAPACITY: usize = 28;
/// Argument-buffer word: how many words of launch arguments the launch passed.
pub const ARGS_COUNT_AT: usize = 28;
/// Argument-buffer word: how many granules the live map covers (`objects.rs`; 0 when the
/// kernel does not check objects).
pub const ARGS_LIVE_AT: usize = 29;
/// Argument-buffer word of the first launch argument.
pub const ARGS_AT: usize = 32;
/// Bytes of the argument buffer (the WGSL declares it whole): at most
/// `ARGS_BYTES / 4 - ARGS_AT` words of launch arguments, 3968 bytes (CUDA allowed 4 KiB of
/// kernel parameters for most of its history).
pub const ARGS_BYTES: usize = 4096;
/// Words of an id-list entry: the id (with flags and kind), the slot of the stop address.
pub const IDS_ENTRY_WORDS: usize = 2;
/// In place, window `i` of `n` bound is at binding `UNIMEM_FIRST_ARG_BINDING +
/// WINDOWS_AFTER_FIRST_ARG + i` as 32-bit words, and `n` bindings later as 64-bit words
/// (after the six argument-side buffers; the live map's and the atomic log's slots are bound
/// even when unused).
pub const WINDOWS_AFTER_FIRST_ARG: usize = 6;
/// The live map's binding after `UNIMEM_FIRST_ARG_BINDING` (`objects.rs`; declared only by
/// modules that check objects).
pub const LIVE_AFTER_FIRST_ARG: usize = 4;
/// The atomic log's binding after `UNIMEM_FIRST_ARG_BINDING`.
pub const ALOG_AFTER_FIRST_ARG: usize = 5;
/// The most storage buffers a module binds besides the frame buffers or windows: the fault
/// buffer, the page table, the in-place map (when too large for a uniform buffer), the
/// control, spill and id buffers, the atomic log and the live map (`launch.rs` fits the
/// windows to the device's limit with it).
pub const OWN_STORAGE_BUFFERS: usize = 8;
/// An unused entry of the poison list.
pub const NO_BLOCK: u32 = u32::MAX;
/// `Round::in_at` when the round's ids are `0..count` (no input list).
pub const NO_LIST: u32 = u32::MAX;

/// Words of the id buffer for `n` invocations: two lists of `n` entries.
pub fn ids_words(n: u32) -> usize {
    2 * IDS_ENTRY_WORDS * n as usize
}

/// Words of the atomic-result log for `n` invocations; invocation `id`'s entry starts at
/// `alog_words(id)`: its count of saved results, then `ATOMIC_LOG` results.
pub fn alog_words(n: u32) -> usize {
    n as usize * (ATOMIC_LOG as usize + 1)
}

/// The per-round immediates (`UnimemRound` in WGSL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Round {
    /// Invocations in this round (slots in a spill round, table entries in a commit pass).
    pub count: u32,
    /// Entry index in the id buffer of this round's input list; [`NO_LIST`]: ids are
    /// `0..count`. (Ordinary rounds.)
    pub in_at: u32,
    /// Entry index of the list stopped invocations are appended to. (Ordinary rounds.)
    pub out_at: u32,
    /// Accessor calls one invocation may make in one round.
    pub max_steps: u32,
    /// Words per spill slot (`SlotLayout::words`).
    pub spill_words: u32,
    /// Word offset of the store table in a slot (`SlotLayout::table_at`).
    pub spill_table_at: u32,
    /// Entries of a slot's store table (a power of two).
    pub spill_stores: u32,
    /// Entry index of the spare list, where a stopped invocation leaves its stop address at
    /// its slot (the other list than `out_at`; `in_at` from the second round on).
    /// (Ordinary rounds.)
    pub spare_at: u32,
    /// Iterations of the loop-budget probe: [`PROBE_ITERATIONS`]. An immediate rather than a
    /// constant so that the compiler cannot unroll the probe into straight code.
    pub probe: u32,
    /// Id of the chunk's first invocation: the user's entry gets `base + id`; every list,
    /// log and report inside the prelude uses the chunk-local id (a launch of more than
    /// `launch::CHUNK` invocations runs them in chunks).
    pub base: u32,
    /// In place with addresses: the bytes of heap, from its start, that the dispatch may
    /// reach (imported, with device addresses equal to host addresses), low and high word.
    /// An access beyond is a fault and reads the heap's first word (`IN_PLACE`).
    pub heap_lo: u32,
    /// See `heap_lo`.
    pub heap_hi: u32,
}

/// Iterations of the loop-budget probe at the end of every invocation (`unimem_flush_log`).
pub const PROBE_ITERATIONS: u32 = 2;

impl Round {
    /// An ordinary round.
    pub fn normal(count: u32, in_at: u32, out_at: u32, spare_at: u32, max_steps: u32) -> Round {
        Round { count, in_at, out_at, max_steps, spare_at, probe: PROBE_ITERATIONS, ..Round::default() }
    }
    /// A spill round over `slots` slots of `layout`, or (`mode` = `MODE_COMMIT`) the commit
    /// pass over their tables (each with the pipeline of that mode).
    pub fn spill(mode: u32, slots: u32, layout: SlotLayout, max_steps: u32) -> Round {
        let count = if mode == MODE_COMMIT { slots * layout.stores } else { slots };
        Round {
            count,
            in_at: NO_LIST,
            max_steps,
            spill_words: layout.words() as u32,
            spill_table_at: layout.table_at() as u32,
            spill_stores: layout.stores,
            probe: PROBE_ITERATIONS,
            ..Round::default()
        }
    }
}

/// Why a kernel error kind happened, for messages.
pub fn error_kind_text(kind: u32) -> &'static str {
    match kind {
        KERNEL_ERROR_OUT_OF_RANGE => "dereferenced a pointer outside unimem's managed heap",
        KERNEL_ERROR_READ_ONLY => "stored to a block mapped read-only",
        KERNEL_ERROR_MISALIGNED => "made an access not aligned to its size (4 bytes; 8 for the 64-bit accessors)",
        KERNEL_ERROR_RUNAWAY => "exceeded the step limit of accessor calls per invocation (a runaway loop, e.g. a cycle in a list? Kernel::set_max_steps or unimem_kernel_set_max_steps raises the limit)",
        KERNEL_ERROR_FREED => "dereferenced a pointer into memory that holds no live allocation (freed?)",
        KERNEL_ERROR_RUNAWAY_LOOP => "ran more loop iterations in one round than the step limit, without necessarily touching memory (an endless loop? Kernel::set_max_steps or unimem_kernel_set_max_steps raises the limit; every loop of a kernel counts its iterations so that none runs for ever and hangs the device; UNIMEM_LOOP_GUARD=off turns that off)",
        KERNEL_ERROR_ARGUMENT => "read an argument word the launch did not pass",
        KERNEL_ERROR_LOOP_BUDGET => "(or one of the invocations the driver runs with it) ran more loop iterations than the driver allows (lavapipe runs at most 65535 per batch of invocations run together, 8 on 256-bit vectors, in all loops together, and cuts longer loops short), so its results would be wrong; split its work over more invocations. Its stores may be partly applied",
        _ => "reported an unknown error",
    }
}

/// True when `user` calls atomic accessors (the atomic log is bound only then).
pub fn uses_atomics(user: &str) -> bool {
    user.contains("unimem_atomic_")
}

/// True when `user` mentions `f64` (a type, or the 64-bit float accessors; comments too): its
/// module then gets those accessors, on a device with `shaderFloat64`. Whether a kernel
/// really uses 64-bit floats is decided on the parsed module (`check.rs`).
pub fn uses_f64(user: &str) -> bool {
    user.contains("unimem_load_f64") || user.contains("unimem_store_f64") || user.match_indices("f64").any(|(at, _)| word_at(user, at, 3))
}

/// True when the `len` bytes of `src` at `at` are a whole identifier (no identifier
/// character just before or after them).
fn word_at(src: &str, at: usize, len: usize) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    src[..at].chars().last().is_none_or(|c| !ident(c)) && src[at + len..].chars().next().is_none_or(|c| !ident(c))
}

/// Which pipeline of a kernel a module is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The round mode (`spill::MODE_*`).
    pub mode: u32,
    /// How many frame buffers, from the first, the module binds and switches over: at least
    /// the buffers holding frames in use (`VulkanBlockDevice::buffers_in_use`). A frame beyond
    /// them reads as not resident (a fault), never as memory. On lavapipe each buffer in the
    /// switch costs every access (the switch runs all its cases under lane masks).
    /// In place: how many windows of the heap (`device/mirror.rs`), from the first.
    pub buffers: usize,
    /// In-place mode: the buffers are the heap's own pages, imported in windows, and a
    /// page-table entry only says whether a block may be accessed (see `IN_PLACE`).
    pub in_place: bool,
    /// In place: each window is bound a second time as 64-bit words, so that a 64-bit load
    /// is one gather instead of two (dropped when the windows would not fit the device's
    /// storage-buffer limit with them: `launch.rs`, `variant_now`).
    pub wide: bool,
    /// In place: no windows are bound; accessors load and store at the host address itself,
    /// through a physical pointer (`addresses.rs`), within the bytes the round's `heap_lo`
    /// and `heap_hi` give. For devices whose addresses of the imported heap are the host's.
    pub addressed: bool,
    /// Accesses are checked against the live map (`objects.rs`): the kernel's
    /// `UNIMEM_CHECK_OBJECTS` when it was made.
    pub objects: bool,
}

/// The entry point the runtime adds (it calls the user's function).
pub const ENTRY_POINT: &str = "unimem_main";

/// What follows the user's source in a module: the user's part is the bytes before it.
pub const USER_END: &str = "\n// ---- unimem prelude (runtime) ----\n";

/// The accessors a user kernel may call (docs: `unimem.h`, the module documentation). Every
/// other `unimem_` name in a module is the runtime's (`check.rs` refuses it).
pub const ACCESSORS: &[&str] = &[
    "unimem_arg_u32",
    "unimem_arg_u64",
    "unimem_arg_ptr",
    "unimem_load_u32",
    "unimem_load_i32",
    "unimem_load_f32",
    "unimem_load_u64",
    "unimem_load_i64",
    "unimem_load_ptr",
    "unimem_store_u32",
    "unimem_store_i32",
    "unimem_store_f32",
    "unimem_store_u64",
    "unimem_store_i64",
    "unimem_store_ptr",
    "unimem_load_f64",
    "unimem_store_f64",
    "unimem_atomic_add_u32",
    "unimem_atomic_min_u32",
    "unimem_atomic_max_u32",
    "unimem_atomic_exchange_u32",
    "unimem_atomic_compare_exchange_u32",
    "unimem_running",
];

/// The whole module for `user` (which defines `fn entry(id: u32)`), for `variant`:
/// `constants` are the device layer's (`VulkanBlockDevice::wgsl_constants`), `frame_buffers`
/// its count of frame buffers (the arguments' bindings follow them all, whichever the variant
/// binds), `base` and `arena_bytes` the managed range the page table covers; `float64`: the
/// device has 64-bit floats (the f64 accessors are added when it has and `user` mentions
/// `f64`).
#[allow(clippy::too_many_arguments)]
pub fn module(
    constants: &str,
    frame_buffers: usize,
    base: u64,
    arena_bytes: u64,
    user: &str,
    entry: &str,
    variant: Variant,
    float64: bool,
) -> String {
    let Variant { mode, buffers: bound, in_place, addressed, .. } = variant;
    let windows = if addressed { 0 } else { bound };
    assert!(bound >= 1 && (in_place || bound <= frame_buffers), "{bound} of {frame_buffers} frame buffers bound");
    let atomics = uses_atomics(user);
    let mut s = String::with_capacity(16 << 10);
    s.push_str(user);
    s.push_str(USER_END);
    s.push_str(constants);
    let _ = writeln!(s, "const UNIMEM_PIPELINE_MODE: u32 = {mode}u;");
    let _ = writeln!(s, "const UNIMEM_BOUND_BUFFERS: u32 = {bound}u;");
    let _ = writeln!(s, "const UNIMEM_DIRECT: bool = {in_place};");
    let _ = writeln!(s, "const UNIMEM_BASE: u64 = {base}lu;");
    let _ = writeln!(s, "const UNIMEM_ARENA_BYTES: u64 = {arena_bytes}lu;");
    let _ = writeln!(s, "const UNIMEM_STORE_LOG: u32 = {STORE_LOG}u;");
    let _ = writeln!(s, "const UNIMEM_ATOMIC_LOG: u32 = {ATOMIC_LOG}u;");
    let _ = writeln!(s, "const UNIMEM_CTL_PENDING_COUNT: u32 = {CTL_PENDING_COUNT}u;");
    let _ = writeln!(s, "const UNIMEM_ARGS_POISON_AT: u32 = {ARGS_POISON_AT}u;");
    let _ = writeln!(s, "const UNIMEM_ARGS_AT: u32 = {ARGS_AT}u;");
    let _ = writeln!(s, "const UNIMEM_ARGS_COUNT_AT: u32 = {ARGS_COUNT_AT}u;");
    let _ = writeln!(s, "const UNIMEM_ARGS_LIVE_AT: u32 = {ARGS_LIVE_AT}u;");
    let _ = writeln!(s, "const UNIMEM_NO_BLOCK: u32 = {NO_BLOCK}u;");
    let _ = writeln!(s, "const UNIMEM_NO_SLOT: u32 = {NO_SLOT}u;");
    let _ = writeln!(s, "const UNIMEM_KIND_SHIFT: u32 = {KIND_SHIFT}u;");
    let _ = writeln!(s, "const UNIMEM_SITE_SHIFT: u32 = {SITE_SHIFT}u;");
    let _ = writeln!(s, "const UNIMEM_ERROR_SITE_SHIFT: u32 = {ERROR_SITE_SHIFT}u;");
    let _ = writeln!(s, "const UNIMEM_NO_LIST: u32 = {NO_LIST}u;");
    let _ = writeln!(s, "const UNIMEM_ESCALATE: u32 = {ESCALATE}u;");
    let _ = writeln!(s, "const UNIMEM_ESCALATE_STORES: u32 = {ESCALATE_STORES}u;");
    for (name, v) in [
        ("MODE_SPILL", spill::MODE_SPILL),
        ("MODE_COMMIT", spill::MODE_COMMIT),
        ("SLOT_STATUS", spill::SLOT_STATUS as u32),
        ("SLOT_FAULT", spill::SLOT_FAULT as u32),
        ("SLOT_ATOMICS", spill::SLOT_ATOMICS as u32),
        ("SLOT_ID", spill::SLOT_ID as u32),
        ("SLOT_HEADER", spill::SLOT_HEADER as u32),
        ("STATUS_DONE", spill::STATUS_DONE),
        ("STATUS_FAULTED", spill::STATUS_FAULTED),
        ("STATUS_STORES_FULL", spill::STATUS_STORES_FULL),
        ("STATUS_ATOMICS_FULL", spill::STATUS_ATOMICS_FULL),
    ] {
        let _ = writeln!(s, "const UNIMEM_{name}: u32 = {v}u;");
    }
    for (name, v) in [
        ("MISALIGNED", KERNEL_ERROR_MISALIGNED),
        ("RUNAWAY", KERNEL_ERROR_RUNAWAY),
        ("FREED", KERNEL_ERROR_FREED),
        ("LOOP_BUDGET", KERNEL_ERROR_LOOP_BUDGET),
        ("RUNAWAY_LOOP", KERNEL_ERROR_RUNAWAY_LOOP),
        ("ARGUMENT", KERNEL_ERROR_ARGUMENT),
    ] {
        let _ = writeln!(s, "const UNIMEM_ERROR_{name}: u32 = {v}u;");
    }
    s.push_str("@group(0) @binding(0) var<storage, read> unimem_pt: array<u32>;\n");
    // In place, binding 1 is the in-place map, which `constants` declares.
    if !in_place {
        s.push_str("@group(0) @binding(1) var<storage, read_write> unimem_dirty: array<u32>;\n");
    }
    s.push_str("@group(0) @binding(2) var<storage, read_write> unimem_faults: array<atomic<u32>>;\n");
    // Frames are atomic only for kernels that use atomics: plain loads vectorise (lavapipe
    // runs atomic loads lane by lane, ~10x slower on a pointer chase).
    let frame_ty = if atomics { "array<atomic<u32>>" } else { "array<u32>" };
    // Frame buffers from binding 3; in place, the heap's windows after the argument buffers.
    let first = 3 + frame_buffers;
    for i in 0..windows {
        let binding = if in_place { first + WINDOWS_AFTER_FIRST_ARG + i } else { 3 + i };
        let _ = writeln!(s, "@group(0) @binding({binding}) var<storage, read_write> unimem_frames_{i}: {frame_ty};");
        if in_place && variant.wide {
            // The same window again, as 64-bit words: a 64-bit load is one gather, not two.
            let _ = writeln!(s, "@group(0) @binding({}) var<storage, read> unimem_wide_{i}: array<u64>;", binding + bound);
        }
    }
    let _ = writeln!(
        s,
        "@group(0) @binding({first}) var<uniform> unimem_args: array<vec4<u32>, {}>;",
        ARGS_BYTES / 16
    );
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<storage, read_write> unimem_ctl: array<atomic<u32>>;",
        first + 1
    );
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<storage, read_write> unimem_spill: array<u32>;",
        first + 2
    );
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<storage, read_write> unimem_ids: array<vec2<u32>>;",
        first + 3
    );
    if atomics {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> unimem_alog: array<u32>;",
            first + ALOG_AFTER_FIRST_ARG
        );
    }
    s.push_str(&objects::wgsl(variant.objects, first + LIVE_AFTER_FIRST_ARG));
    match addressed {
        true => {
            s.push_str(super::addresses::WGSL);
            s.push_str(&address_access(atomics));
        }
        false => s.push_str(&frame_access(bound, atomics, in_place, variant.wide)),
    }
    s.push_str(&unrolled());
    if in_place {
        s.push_str(if addressed { IN_PLACE_ADDRESSES } else { IN_PLACE_WINDOWS });
    }
    s.push_str(if in_place { IN_PLACE } else { FRAMES });
    s.push_str(PRELUDE);
    if atomics {
        s.push_str(ATOMICS);
    }
    if float64 && uses_f64(user) {
        s.push_str(FLOAT64);
    }
    let _ = write!(
        s,
        "
// ---- entry point (runtime) ----
@compute @workgroup_size(64)
fn unimem_main(@builtin(global_invocation_id) unimem_g: vec3<u32>, @builtin(num_workgroups) unimem_nw: vec3<u32>) {{
    // Every name here starts with `unimem_`, as the user's entry may not: none shadows it.
    let unimem_i = unimem_g.y * unimem_nw.x * 64u + unimem_g.x;
    if (unimem_i >= unimem_round.count) {{
        return;
    }}
    if (UNIMEM_PIPELINE_MODE == UNIMEM_MODE_COMMIT) {{
        unimem_commit(unimem_i);
        return;
    }}
    var unimem_local = unimem_i;
    if (UNIMEM_PIPELINE_MODE == UNIMEM_MODE_SPILL) {{
        unimem_spill_at = unimem_i * unimem_round.spill_words;
        unimem_local = unimem_spill[unimem_spill_at + UNIMEM_SLOT_ID];
    }} else if (unimem_round.in_at != UNIMEM_NO_LIST) {{
        unimem_local = unimem_ids[unimem_round.in_at + unimem_i].x;
    }}
    unimem_id = unimem_local;
    unimem_slot = unimem_i;
    {entry}(unimem_round.base + unimem_local);
    unimem_finish();
}}
"
    );
    s
}

/// The functions reaching word `loc.y` of frame buffer (in place: window) `loc.x`:
/// `unimem_frame_load`, `_load64`, `_store`, and with `atomics` one per atomic op. Each is a
/// switch over the `bound` buffers, whose default (a buffer not bound) reads 0 and writes
/// nothing; with one buffer bound, no switch: every location then means buffer 0 (callers
/// discard what a stopped invocation reads, and never write there). On lavapipe each case
/// costs every access (a masked gather), and the switch itself ~4% of a pointer chase.
fn frame_access(bound: usize, atomics: bool, in_place: bool, wide: bool) -> String {
    // `body` with `#` standing for the buffer's index; `default` for a buffer not bound.
    let over_buffers = |body: &str, default: &str| -> String {
        if bound == 1 {
            return format!("    {}\n", body.replace('#', "0"));
        }
        let cases: String = (0..bound).map(|i| format!("        case {i}u: {{ {} }}\n", body.replace('#', &i.to_string()))).collect();
        format!("    switch loc.x {{\n{cases}        default: {{ {default} }}\n    }}\n")
    };
    let mut s = String::new();
    let (load, store) = if atomics {
        ("return atomicLoad(&unimem_frames_#[loc.y]);", "atomicStore(&unimem_frames_#[loc.y], v);")
    } else {
        ("return unimem_frames_#[loc.y];", "unimem_frames_#[loc.y] = v;")
    };
    let _ = write!(s, "\nfn unimem_frame_load(loc: vec2<u32>) -> u32 {{\n{}}}\n", over_buffers(load, "return 0u;"));
    let _ = write!(s, "\nfn unimem_frame_store(loc: vec2<u32>, v: u32) {{\n{}}}\n", over_buffers(store, ""));
    // The 64-bit word at loc (an even word): in place from the wide view, else two loads.
    let load64 = if in_place && wide {
        over_buffers("return unimem_wide_#[loc.y >> 1u];", "return 0lu;")
    } else {
        "    return u64(unimem_frame_load(loc)) | (u64(unimem_frame_load(vec2<u32>(loc.x, loc.y + 1u))) << 32u);\n".to_owned()
    };
    let _ = write!(s, "\nfn unimem_frame_load64(loc: vec2<u32>) -> u64 {{\n{load64}}}\n");
    if atomics {
        for (op, call) in [
            ("add", "atomicAdd(&unimem_frames_#[loc.y], v)"),
            ("min", "atomicMin(&unimem_frames_#[loc.y], v)"),
            ("max", "atomicMax(&unimem_frames_#[loc.y], v)"),
            ("exchange", "atomicExchange(&unimem_frames_#[loc.y], v)"),
        ] {
            let _ = write!(
                s,
                "\nfn unimem_frame_{op}(loc: vec2<u32>, c: u32, v: u32) -> u32 {{\n{}}}\n",
                over_buffers(&format!("return {call};"), "return 0u;")
            );
        }
        // Weak compare-exchange may fail spuriously (old value equal, not exchanged): retry.
        let cas = over_buffers(
            "loop { let r = atomicCompareExchangeWeak(&unimem_frames_#[loc.y], c, v); \
             if (r.exchanged || r.old_value != c) { return r.old_value; } }",
            "",
        );
        let _ = write!(s, "\nfn unimem_frame_cas(loc: vec2<u32>, c: u32, v: u32) -> u32 {{\n{cas}    return 0u;\n}}\n");
    }
    s
}

/// The functions of [`frame_access`] for an addressed in-place module: a location is the
/// host address itself, low word first (`IN_PLACE_ADDRESSES`), reached through the
/// placeholders of `addresses.rs`.
fn address_access(atomics: bool) -> String {
    let mut s = String::from(
        "
fn unimem_loc_addr(loc: vec2<u32>) -> u64 {
    return u64(loc.x) | (u64(loc.y) << 32u);
}
fn unimem_frame_load(loc: vec2<u32>) -> u32 {
    return unimem_addr_load32(unimem_loc_addr(loc));
}
fn unimem_frame_store(loc: vec2<u32>, v: u32) {
    unimem_addr_store32(unimem_loc_addr(loc), v);
}
fn unimem_frame_load64(loc: vec2<u32>) -> u64 {
    return unimem_addr_load64(unimem_loc_addr(loc));
}
",
    );
    if atomics {
        for op in ["add", "min", "max", "exchange"] {
            let _ = write!(s, "fn unimem_frame_{op}(loc: vec2<u32>, c: u32, v: u32) -> u32 {{\n    return unimem_addr_{op}(unimem_loc_addr(loc), v);\n}}\n");
        }
        s.push_str("fn unimem_frame_cas(loc: vec2<u32>, c: u32, v: u32) -> u32 {\n    return unimem_addr_cas(unimem_loc_addr(loc), c, v);\n}\n");
    }
    s
}

/// The prelude's scans, unrolled. lavapipe (gallivm) gives each shader invocation a budget of
/// 65535 loop iterations in total and silently cuts every loop short once it is spent, so the
/// prelude's only loop is the store-log flush, which checks that it ran to its end
/// (`unimem_flush_log`); the scans here stay unrolled and branch-free or only run in spill
/// rounds.
fn unrolled() -> String {
    let mut s = String::new();
    // Called only in spill rounds. Branch-free: a compare per entry; unused entries hold
    // NO_BLOCK, never a block.
    s.push_str("\nfn unimem_poisoned(b: u32) -> bool {\n    var hit = false;\n");
    for k in 0..POISON_CAPACITY {
        let _ = writeln!(s, "    hit = hit | (unimem_args_word(UNIMEM_ARGS_POISON_AT + {k}u) == b);");
    }
    s.push_str("    return hit;\n}\n");
    s.push_str("\n// 1 + the index of p's entry in the store log, or 0.\nfn unimem_log_find(p: u64) -> u32 {\n    let n = unimem_log_n;\n");
    for k in 0..STORE_LOG {
        let _ = writeln!(
            s,
            "    if ({k}u >= n) {{ return 0u; }} if (unimem_log_addr[{k}u] == p) {{ return {}u; }}",
            k + 1
        );
    }
    s.push_str("    return 0u;\n}\n");
    s.push_str(
        "\n// Word index in unimem_spill of p's entry in this invocation's store table, or of the
// empty entry where p goes, or 0xffffffff when PROBES entries from p's hash hold other words.
fn unimem_spill_probe(p: u64) -> u32 {
    let t = unimem_spill_at + unimem_round.spill_table_at;
    let mask = unimem_round.spill_stores - 1u;
    // Fibonacci hashing: the product's top bits. Words at a fixed stride (an array, a field
    // of an array of structs) land evenly apart; folding high bits into the low ones instead
    // clustered them (a simulation of 40 consecutive words in 128 entries: 26% of the tables
    // had an 8-probe run full, 75% at a 64-byte stride; none with the top bits).
    let h = (u32((p >> 2u) & 0xfffffffflu) * 0x9e3779b1u) >> (32u - countTrailingZeros(unimem_round.spill_stores));
    let lo = u32(p & 0xfffffffflu);
    let hi = u32(p >> 32u);
",
    );
    for j in 0..spill::PROBES {
        let _ = writeln!(
            s,
            "    {{ let e = t + ((h + {j}u) & mask) * 3u; let a = unimem_spill[e]; let b = unimem_spill[e + 1u]; \
             if ((a == lo && b == hi) || (a | b) == 0u) {{ return e; }} }}"
        );
    }
    s.push_str("    return 0xffffffffu;\n}\n");
    s
}

/// Translation through frames (migration mode): the page-table entry names the frame.
pub const FRAMES: &str = r#"
// Where the word at p lives: (frame buffer, word), or UNIMEM_FAIL after stopping the
// invocation (fault or error), or when it already stopped. Counts a step. `align` is the
// access's size less one (3, or 7 for 64-bit accessors): p must be a multiple of the size.
fn unimem_translate(p: u64, write: bool, align: u32) -> vec2<u32> {
    // Branch-free until the one test below (each divergent branch is paid by every lane).
    unimem_steps += 1u;
    let off = p - UNIMEM_BASE;
    let in_range = off < UNIMEM_ARENA_BYTES; // below the base, off wraps above the arena
    let b = select(0u, u32(off >> UNIMEM_BLOCK_SHIFT), in_range);
    let e = unimem_pt[b];
    let f1 = e & UNIMEM_PTE_FRAME_MASK;
    let kind = unimem_error_kind(p, in_range, write && (e & UNIMEM_PTE_WRITABLE) == 0u && f1 != 0u, align, unimem_dead(off, in_range));
    // A frame in a buffer this pipeline does not bind (made resident after the runtime chose
    // the pipeline) is a fault: the next round binds it.
    let absent = f1 == 0u || ((f1 - 1u) >> UNIMEM_FRAME_BUFFER_SHIFT) >= UNIMEM_BOUND_BUFFERS;
    if (kind != 0u || absent || unimem_stop != 0u) {
        if (unimem_stop == 0u) {
            unimem_stop_with(kind, p, b);
        }
        return UNIMEM_FAIL;
    }
    return unimem_frame_loc(f1 - 1u, off);
}

// The word at offset off of the heap, its block being in frame f: (frame buffer, word).
fn unimem_frame_loc(f: u32, off: u64) -> vec2<u32> {
    let w = (u32(off & 0xfffffffflu) & (UNIMEM_BLOCK_SIZE - 1u)) >> 2u;
    return vec2<u32>(f >> UNIMEM_FRAME_BUFFER_SHIFT,
                     ((f & (UNIMEM_FRAMES_PER_BUFFER - 1u)) << (UNIMEM_BLOCK_SHIFT - 2u)) + w);
}

// Whether a load reads memory (else 0), given whether the invocation was running before it:
// only if it still runs after the translation (a stopped one's location is UNIMEM_FAIL).
fn unimem_read_ok(running: bool) -> bool {
    return unimem_stop == 0u;
}

// Marks loc's frame dirty (pagetable.rs: a plain store of 1, only where it reads 0).
fn unimem_set_dirty(loc: vec2<u32>) {
    let f = (loc.x << UNIMEM_FRAME_BUFFER_SHIFT) | (loc.y >> (UNIMEM_BLOCK_SHIFT - 2u));
    if (unimem_dirty[f] == 0u) {
        unimem_dirty[f] = 1u;
    }
}

// Writes a logged store to memory (every logged block was resident when logged, and nothing
// is evicted during a round, nor between a spill round and its commit pass).
fn unimem_commit_word(p: u64, v: u32) {
    let off = p - UNIMEM_BASE;
    let e = unimem_pt[u32(off >> UNIMEM_BLOCK_SHIFT)];
    let loc = unimem_frame_loc((e & UNIMEM_PTE_FRAME_MASK) - 1u, off);
    unimem_frame_store(loc, v);
    unimem_set_dirty(loc);
}

"#;

/// In place through windows: how far the bound windows reach, and where a word is in them.
pub const IN_PLACE_WINDOWS: &str = r#"
// Whether offset off of the heap is in a window this pipeline binds.
fn unimem_inside(off: u64) -> bool {
    return (off >> UNIMEM_WINDOW_SHIFT) < u64(UNIMEM_BOUND_BUFFERS);
}

// Where the word at p (offset off of the heap) is: (window, word). Safe to access outside
// the bound windows too (!inside): the frame switch's default reads 0 and writes nothing
// (with one window bound, window 0), and a word beyond a window's end is clamped (naga's
// Restrict policy). A misaligned p is an error; the word index drops the low bits.
fn unimem_place(p: u64, off: u64, inside: bool, align: u32) -> vec2<u32> {
    return vec2<u32>(u32(off >> UNIMEM_WINDOW_SHIFT), (u32(off & 0xfffffffflu) & ((1u << UNIMEM_WINDOW_SHIFT) - 1u)) >> 2u);
}
"#;

/// In place through addresses: how far the dispatch may reach (the round's `heap_lo` and
/// `heap_hi`), and a word's location, its address.
pub const IN_PLACE_ADDRESSES: &str = r#"
// Whether offset off of the heap is in the part this dispatch may reach (imported, mapped).
fn unimem_inside(off: u64) -> bool {
    return off < (u64(unimem_round.heap_lo) | (u64(unimem_round.heap_hi) << 32u));
}

// Where the word at p (offset off of the heap) is: its address, low word first; outside
// the part the dispatch reaches (!inside), the heap's first word. Aligned to the access's
// size (a misaligned p is an error). A physical load has no bounds check: this is the one.
fn unimem_place(p: u64, off: u64, inside: bool, align: u32) -> vec2<u32> {
    let a = select(UNIMEM_BASE, p, inside) & ~u64(align);
    return vec2<u32>(u32(a & 0xfffffffflu), u32(a >> 32u));
}
"#;

/// Translation in place (in-place mode): the in-place map only says whether the block is
/// mapped. After [`IN_PLACE_WINDOWS`] or [`IN_PLACE_ADDRESSES`].
pub const IN_PLACE: &str = r#"
// Where the word at p lives (unimem_place). Stops the invocation (fault or error) when
// p's block is not mapped in place, or already stopped; callers then discard what they read
// and do nothing. The location depends on p alone, not on the map, so the data load runs
// beside the map's load instead of after it (a pointer chase pays one dependent load per
// step instead of two). Every in-place mapping is writable: no read-only check. Every
// location is safe to access (unimem_place), and the heap reached is committed memory.
// Counts a step. `align` as in the FRAMES version.
fn unimem_translate(p: u64, write: bool, align: u32) -> vec2<u32> {
    // Branch-free until the one test below (each divergent branch is paid by every lane).
    unimem_steps += 1u;
    let off = p - UNIMEM_BASE;
    let in_range = off < UNIMEM_ARENA_BYTES; // below the base, off wraps above the arena
    let b = select(0u, u32(off >> UNIMEM_BLOCK_SHIFT), in_range);
    let mapped = ((unimem_map_word(b >> 5u) >> (b & 31u)) & 1u) != 0u;
    let kind = unimem_error_kind(p, in_range, false, align, unimem_dead(off, in_range));
    // A block beyond what the dispatch reaches (the heap grew after the runtime chose the
    // pipeline or its bounds) is a fault: the next round reaches it.
    let inside = unimem_inside(off);
    let absent = !mapped || !inside;
    if ((kind != 0u || absent) && unimem_stop == 0u) {
        unimem_stop_with(kind, p, b);
    }
    return unimem_place(p, off, inside, align);
}

// Whether a load reads memory (else 0), given whether the invocation was running before it.
// In place every location is safe to read, so the access that stops an invocation may return
// what its location holds (the value itself, when the block is live but not yet mapped);
// later ones return 0. Deciding on the entry instead would put its load on the data's chain.
fn unimem_read_ok(running: bool) -> bool {
    return running;
}

// In place the host pages are the only copy: nothing to mark.
fn unimem_set_dirty(loc: vec2<u32>) {
}

// Writes a logged store to memory (every logged block was mapped when logged, and nothing is
// unmapped during a round, nor between a spill round and its commit pass). Never runs: in
// place nothing is logged (UNIMEM_DIRECT); clamped all the same.
fn unimem_commit_word(p: u64, v: u32) {
    let off = p - UNIMEM_BASE;
    unimem_frame_store(unimem_place(p, off, unimem_inside(off), 3u), v);
}

"#;

/// The accessors over `unimem_translate` (from [`FRAMES`] or [`IN_PLACE`]).
pub const PRELUDE: &str = r#"
// The error an access to p makes, or 0 (branch-free): read_only is a store to a block
// kernels may not write; in_range says p is in the managed heap; align is the access's size
// less one; dead, that the live map says p is in no live allocation (objects.rs). Call after
// counting the step.
fn unimem_error_kind(p: u64, in_range: bool, read_only: bool, align: u32, dead: bool) -> u32 {
    var kind = select(0u, UNIMEM_ERROR_READ_ONLY, read_only);
    kind = select(kind, UNIMEM_ERROR_FREED, dead);
    kind = select(kind, UNIMEM_ERROR_RUNAWAY, unimem_steps > unimem_round.max_steps);
    kind = select(kind, UNIMEM_ERROR_MISALIGNED, (u32(p & 0xfffffffflu) & align) != 0u);
    return select(kind, UNIMEM_ERROR_OUT_OF_RANGE, !in_range);
}

struct UnimemRound {
    count: u32, in_at: u32, out_at: u32, max_steps: u32,
    spill_words: u32, spill_table_at: u32, spill_stores: u32, spare_at: u32, probe: u32,
    base: u32, heap_lo: u32, heap_hi: u32,
}
var<immediate> unimem_round: UnimemRound;

// Per-invocation state (private: starts afresh on every run, including replays).
var<private> unimem_id: u32;
// Its index in this round (its entry in the input list, and in the spare list).
var<private> unimem_slot: u32;
// 0 running, 1 faulted or escalated (replay), 2 error (never replayed).
var<private> unimem_stop: u32 = 0u;
var<private> unimem_steps: u32 = 0u;
// Loop iterations of the user's code (guard.rs), bounded like the steps.
var<private> unimem_iterations: u32 = 0u;
var<private> unimem_atomics: u32 = 0u;
// Why the invocation stopped (kept privately; written to the fault buffer once, by
// unimem_finish: recording in the accessors themselves made every access ~5x slower on
// lavapipe, which runs the never-taken atomics masked, lane by lane).
var<private> unimem_stop_addr: u64 = 0lu;
var<private> unimem_stop_kind: u32 = 0u;
var<private> unimem_stop_block: u32 = 0u;
// The site (sites.rs) of the access or loop being run: the user's code sets it before each
// accessor call and loop step, with a constant (free once inlined); kept at a stop.
var<private> unimem_site: u32 = 0u;
var<private> unimem_stop_site: u32 = 0u;
// Store log: word addresses and values, committed when the invocation completes.
var<private> unimem_log_addr: array<u64, UNIMEM_STORE_LOG>;
var<private> unimem_log_val: array<u32, UNIMEM_STORE_LOG>;
// Entries of the private log; in a spill round, nonzero once the slot's table has any.
var<private> unimem_log_n: u32 = 0u;
// In a spill round: the first word of this invocation's slot in unimem_spill.
var<private> unimem_spill_at: u32 = 0u;

// Stop kinds that are not errors: a log is full, restart the invocation in a spill round.
const UNIMEM_FULL_STORES: u32 = 0x100u;
const UNIMEM_FULL_ATOMICS: u32 = 0x101u;

const UNIMEM_FAIL: vec2<u32> = vec2<u32>(0xffffffffu, 0u);

// Stops the invocation: kind 0 is a fault on `block` (replay), others are errors.
fn unimem_stop_with(kind: u32, p: u64, block: u32) {
    unimem_stop = select(1u, 2u, kind != 0u);
    unimem_stop_kind = kind;
    unimem_stop_addr = p;
    unimem_stop_block = block;
    unimem_stop_site = unimem_site;
}

// True in a spill round whose slots have a store table (else stores use the private log).
fn unimem_spill_table() -> bool {
    return UNIMEM_PIPELINE_MODE == UNIMEM_MODE_SPILL && unimem_round.spill_stores != 0u;
}

// Stops the invocation because a log is full (before the access that did not fit).
fn unimem_stop_full(kind: u32) {
    unimem_stop = 1u;
    unimem_stop_kind = kind;
}

fn unimem_report_error(kind: u32, p: u64) {
    let c = atomicAdd(&unimem_faults[UNIMEM_FAULT_ERROR_COUNT], 1u);
    if (c == 0u) {
        atomicStore(&unimem_faults[UNIMEM_FAULT_ERROR_KIND], kind | (unimem_stop_site << UNIMEM_ERROR_SITE_SHIFT));
        atomicStore(&unimem_faults[UNIMEM_FAULT_ERROR_ADDR_LO], u32(p & 0xfffffffflu));
        atomicStore(&unimem_faults[UNIMEM_FAULT_ERROR_ADDR_HI], u32(p >> 32u));
        atomicStore(&unimem_faults[UNIMEM_FAULT_ERROR_INVOCATION], unimem_id);
    }
}

fn unimem_report_fault(b: u32) {
    let bit = 1u << (b & 31u);
    let old = atomicOr(&unimem_faults[UNIMEM_FAULT_PENDING_AT + (b >> 5u)], bit);
    if ((old & bit) == 0u) {
        let i = atomicAdd(&unimem_faults[UNIMEM_FAULT_COUNT], 1u);
        if (i < UNIMEM_FAULT_CAPACITY) {
            atomicStore(&unimem_faults[UNIMEM_FAULT_ENTRIES_AT + i], b);
        }
    }
}

// Commits the store log, in a loop: unrolled, its entries would cost every invocation their
// full time on lavapipe even when the log is empty. Returns false if the driver cut a loop of
// the invocation short (lavapipe's budget of 65535 loop iterations per invocation): the flush
// loop itself, or, detected by a two-iteration probe, a loop of the user's.
fn unimem_flush_log() -> bool {
    var k = 0u;
    var done = UNIMEM_DIRECT;
    if (!UNIMEM_DIRECT) {
        loop {
            if (k >= unimem_log_n) {
                done = true;
                break;
            }
            unimem_commit_word(unimem_log_addr[k], unimem_log_val[k]);
            k += 1u;
        }
    }
    unimem_log_n = 0u;
    // unimem_round.probe iterations (2): a count the compiler cannot see, so the loop stays
    // a loop, which the driver cuts short after one iteration if the budget is spent.
    var probe = 0u;
    loop {
        probe += 1u;
        if (probe >= unimem_round.probe) {
            break;
        }
    }
    return done && probe == unimem_round.probe;
}

// Commit pass: table entry i of the slots of completed invocations.
fn unimem_commit(i: u32) {
    let at = (i / unimem_round.spill_stores) * unimem_round.spill_words;
    if (unimem_spill[at + UNIMEM_SLOT_STATUS] != UNIMEM_STATUS_DONE) {
        return;
    }
    let e = at + unimem_round.spill_table_at + (i & (unimem_round.spill_stores - 1u)) * 3u;
    let lo = unimem_spill[e];
    let hi = unimem_spill[e + 1u];
    if ((lo | hi) != 0u) {
        unimem_commit_word(u64(lo) | (u64(hi) << 32u), unimem_spill[e + 2u]);
    }
}

fn unimem_finish() {
    let spill = UNIMEM_PIPELINE_MODE == UNIMEM_MODE_SPILL;
    if (unimem_stop == 0u) {
        if (spill) {
            unimem_spill[unimem_spill_at + UNIMEM_SLOT_STATUS] = UNIMEM_STATUS_DONE;
        }
        if (unimem_spill_table() || unimem_flush_log()) {
            return;
        }
        unimem_stop_with(UNIMEM_ERROR_LOOP_BUDGET, 0lu, 0u);
    }
    var kind = unimem_stop_kind;
    // A block the runtime found without live allocations: an error, not a fault. Only spill
    // rounds check (an ordinary round's fault on such a block is an error the runtime
    // reports from the output list), so that ordinary invocations do not pay for the check.
    if (spill && kind == 0u && unimem_poisoned(unimem_stop_block)) {
        kind = UNIMEM_ERROR_FREED;
    }
    if (spill) {
        if (kind != 0u && kind < UNIMEM_FULL_STORES) {
            unimem_report_error(kind, unimem_stop_addr);
            return;
        }
        if (kind == 0u) {
            unimem_report_fault(unimem_stop_block);
            unimem_spill[unimem_spill_at + UNIMEM_SLOT_FAULT] = unimem_stop_block;
        }
        var status = UNIMEM_STATUS_FAULTED;
        if (kind == UNIMEM_FULL_STORES) {
            status = UNIMEM_STATUS_STORES_FULL;
        } else if (kind == UNIMEM_FULL_ATOMICS) {
            status = UNIMEM_STATUS_ATOMICS_FULL;
        }
        unimem_spill[unimem_spill_at + UNIMEM_SLOT_STATUS] = status;
        return;
    }
    // Ordinary round: an entry in the output list and the stop address in the spare list
    // say it all (one atomic, two stores; the module docs give the format). A fault or an
    // error carries its slot; a full log escalates.
    let full = kind >= UNIMEM_FULL_STORES;
    let flags = select(kind << UNIMEM_KIND_SHIFT, UNIMEM_ESCALATE | select(0u, UNIMEM_ESCALATE_STORES, kind == UNIMEM_FULL_STORES), full);
    unimem_ids[unimem_round.spare_at + unimem_slot] = vec2<u32>(u32(unimem_stop_addr & 0xfffffffflu), u32(unimem_stop_addr >> 32u));
    let at = unimem_round.out_at + atomicAdd(&unimem_ctl[UNIMEM_CTL_PENDING_COUNT], 1u);
    unimem_ids[at] = vec2<u32>(unimem_id | flags, select(unimem_slot | (unimem_stop_site << UNIMEM_SITE_SHIFT), UNIMEM_NO_SLOT, full));
}

// The value the invocation stored at p (its log, or in a spill round its table), else v.
// Callers test unimem_log_n != 0 first.
fn unimem_logged(p: u64, v: u32) -> u32 {
    if (unimem_spill_table()) {
        let e = unimem_spill_probe(p);
        if (e != 0xffffffffu && (unimem_spill[e] | unimem_spill[e + 1u]) != 0u) {
            return unimem_spill[e + 2u];
        }
        return v;
    }
    let k = unimem_log_find(p);
    if (k != 0u) {
        return unimem_log_val[k - 1u];
    }
    return v;
}

// ---- public accessors ----

// Called at the top of every loop body of the user's code (guard.rs inserts the call): counts
// the iteration and, past the step limit, stops the invocation as a runaway (unless it had
// stopped already) and returns true, which ends the loop.
// It calls no function (guard.rs moves it before every other function of the module).
fn unimem_loop_step() -> bool {
    unimem_iterations += 1u;
    let over = unimem_iterations > unimem_round.max_steps;
    if (over && unimem_stop == 0u) {
        // As unimem_stop_with(UNIMEM_ERROR_RUNAWAY_LOOP, 0lu, 0u).
        unimem_stop = 2u;
        unimem_stop_kind = UNIMEM_ERROR_RUNAWAY_LOOP;
        unimem_stop_addr = 0lu;
        unimem_stop_block = 0u;
        unimem_stop_site = unimem_site;
    }
    return over;
}

// True until the invocation faulted or erred; after that, accessors return 0 and do nothing
// (and a loop that only a loaded value would end runs until the loop guard's count passes
// the step limit: test this instead).
fn unimem_running() -> bool {
    return unimem_stop == 0u;
}

// Word w of the argument buffer.
fn unimem_args_word(w: u32) -> u32 {
    return unimem_args[w >> 2u][w & 3u];
}

// Argument word i; one the launch did not pass stops the invocation with an error (the
// stop address is i) and reads 0. The test is uniform when i is (a constant, usually).
fn unimem_arg_u32(i: u32) -> u32 {
    if (i >= unimem_args_word(UNIMEM_ARGS_COUNT_AT)) {
        if (unimem_stop == 0u) {
            unimem_stop_with(UNIMEM_ERROR_ARGUMENT, u64(i), 0u);
        }
        return 0u;
    }
    return unimem_args_word(UNIMEM_ARGS_AT + i);
}

fn unimem_arg_u64(i: u32) -> u64 {
    return u64(unimem_arg_u32(i)) | (u64(unimem_arg_u32(i + 1u)) << 32u);
}

fn unimem_arg_ptr(i: u32) -> u64 {
    return unimem_arg_u64(i);
}

fn unimem_load_u32(p: u64) -> u32 {
    let running = unimem_stop == 0u;
    let loc = unimem_translate(p, false, 3u);
    // No early return (branches cost all lanes): a stopped invocation reads 0.
    let ok = unimem_read_ok(running);
    var v = select(0u, unimem_frame_load(loc), ok);
    if (!UNIMEM_DIRECT && unimem_log_n != 0u && ok) {
        v = unimem_logged(p, v);
    }
    return v;
}

fn unimem_load_i32(p: u64) -> i32 {
    return bitcast<i32>(unimem_load_u32(p));
}

fn unimem_load_f32(p: u64) -> f32 {
    return bitcast<f32>(unimem_load_u32(p));
}

fn unimem_load_u64(p: u64) -> u64 {
    // One translation: p is a multiple of 8 (or the access is an error), so both words are in
    // p's block, at consecutive locations.
    let running = unimem_stop == 0u;
    let loc = unimem_translate(p, false, 7u);
    let ok = unimem_read_ok(running);
    var w = select(0lu, unimem_frame_load64(loc), ok);
    if (!UNIMEM_DIRECT && unimem_log_n != 0u && ok) {
        let lo = unimem_logged(p, u32(w & 0xfffffffflu));
        let hi = unimem_logged(p + 4lu, u32(w >> 32u));
        w = u64(lo) | (u64(hi) << 32u);
    }
    return w;
}

fn unimem_load_i64(p: u64) -> i64 {
    return bitcast<i64>(unimem_load_u64(p));
}

fn unimem_load_ptr(p: u64) -> u64 {
    return unimem_load_u64(p);
}

// Stores the word v at p, which must be a multiple of align + 1.
fn unimem_store_word(p: u64, v: u32, align: u32) {
    let loc = unimem_translate(p, true, align);
    if (unimem_stop != 0u) {
        return;
    }
    if (UNIMEM_DIRECT) {
        unimem_frame_store(loc, v);
        return;
    }
    if (unimem_spill_table()) {
        let e = unimem_spill_probe(p);
        if (e == 0xffffffffu) {
            unimem_stop_full(UNIMEM_FULL_STORES);
            return;
        }
        unimem_spill[e] = u32(p & 0xfffffffflu);
        unimem_spill[e + 1u] = u32(p >> 32u);
        unimem_spill[e + 2u] = v;
        unimem_log_n = 1u;
        return;
    }
    let k = unimem_log_find(p);
    if (k != 0u) {
        unimem_log_val[k - 1u] = v;
        return;
    }
    if (unimem_log_n == UNIMEM_STORE_LOG) {
        // Full: stop before the store; the runtime restarts the invocation with a bigger log.
        unimem_stop_full(UNIMEM_FULL_STORES);
        return;
    }
    unimem_log_addr[unimem_log_n] = p;
    unimem_log_val[unimem_log_n] = v;
    unimem_log_n += 1u;
}

fn unimem_store_u32(p: u64, v: u32) {
    unimem_store_word(p, v, 3u);
}

fn unimem_store_i32(p: u64, v: i32) {
    unimem_store_u32(p, bitcast<u32>(v));
}

fn unimem_store_f32(p: u64, v: f32) {
    unimem_store_u32(p, bitcast<u32>(v));
}

fn unimem_store_u64(p: u64, v: u64) {
    unimem_store_word(p, u32(v & 0xfffffffflu), 7u);
    unimem_store_word(p + 4lu, u32(v >> 32u), 3u);
}

fn unimem_store_i64(p: u64, v: i64) {
    unimem_store_u64(p, bitcast<u64>(v));
}

fn unimem_store_ptr(p: u64, v: u64) {
    unimem_store_u64(p, v);
}
"#;

/// The 64-bit float accessors, for kernels that mention `f64` ([`uses_f64`]): the 64-bit
/// integer accessors, bitcast (8-byte alignment, one translation).
pub const FLOAT64: &str = r#"
fn unimem_load_f64(p: u64) -> f64 {
    return bitcast<f64>(unimem_load_u64(p));
}

fn unimem_store_f64(p: u64, v: f64) {
    unimem_store_u64(p, bitcast<u64>(v));
}
"#;

/// Atomic accessors (added only when the kernel uses them; they need the atomic log).
pub const ATOMICS: &str = r#"
// Runs atomic `op` at p and marks its block dirty; returns the old value, or 0 when the
// translation stopped the invocation (then nothing ran).
fn unimem_atomic_now(op: u32, p: u64, c: u32, v: u32) -> u32 {
    let loc = unimem_translate(p, true, 3u);
    if (unimem_stop != 0u) {
        return 0u;
    }
    var r = 0u;
    switch op {
        case 0u: { r = unimem_frame_add(loc, c, v); }
        case 1u: { r = unimem_frame_min(loc, c, v); }
        case 2u: { r = unimem_frame_max(loc, c, v); }
        case 3u: { r = unimem_frame_exchange(loc, c, v); }
        default: { r = unimem_frame_cas(loc, c, v); }
    }
    unimem_set_dirty(loc);
    return r;
}

// Runs atomic `op` at p once per invocation, however often the invocation is replayed
// (direct: just once, nothing is replayed).
fn unimem_atomic(op: u32, p: u64, c: u32, v: u32) -> u32 {
    if (unimem_stop != 0u) {
        return 0u;
    }
    if (UNIMEM_DIRECT) {
        return unimem_atomic_now(op, p, c, v);
    }
    let k = unimem_atomics;
    unimem_atomics += 1u;
    // Where results are saved: the atomic log, or in a spill round the invocation's slot.
    let spill = UNIMEM_PIPELINE_MODE == UNIMEM_MODE_SPILL;
    var count_at = unimem_id * (UNIMEM_ATOMIC_LOG + 1u);
    var capacity = UNIMEM_ATOMIC_LOG;
    if (spill) {
        count_at = unimem_spill_at + UNIMEM_SLOT_ATOMICS;
        capacity = unimem_round.spill_table_at - UNIMEM_SLOT_HEADER;
    }
    let saved_at = select(count_at + 1u, unimem_spill_at + UNIMEM_SLOT_HEADER, spill);
    // (Branches, not select: each buffer is read only where its index is in range.)
    var saved = 0u;
    if (spill) {
        saved = unimem_spill[count_at];
    } else {
        saved = unimem_alog[count_at];
    }
    if (k < saved) {
        // Done in an earlier run of this invocation.
        if (spill) {
            return unimem_spill[saved_at + k];
        }
        return unimem_alog[saved_at + k];
    }
    if (k >= capacity) {
        unimem_stop_full(UNIMEM_FULL_ATOMICS);
        return 0u;
    }
    let r = unimem_atomic_now(op, p, c, v);
    if (unimem_stop != 0u) {
        return 0u;
    }
    if (spill) {
        unimem_spill[saved_at + k] = r;
        unimem_spill[count_at] = k + 1u;
    } else {
        unimem_alog[saved_at + k] = r;
        unimem_alog[count_at] = k + 1u;
    }
    return r;
}

fn unimem_atomic_add_u32(p: u64, v: u32) -> u32 { return unimem_atomic(0u, p, 0u, v); }
fn unimem_atomic_min_u32(p: u64, v: u32) -> u32 { return unimem_atomic(1u, p, 0u, v); }
fn unimem_atomic_max_u32(p: u64, v: u32) -> u32 { return unimem_atomic(2u, p, 0u, v); }
fn unimem_atomic_exchange_u32(p: u64, v: u32) -> u32 { return unimem_atomic(3u, p, 0u, v); }
// Stores v at p if it holds cmp; returns the old value (the exchange happened iff it equals cmp).
fn unimem_atomic_compare_exchange_u32(p: u64, cmp: u32, v: u32) -> u32 {
    return unimem_atomic(4u, p, cmp, v);
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::pagetable::{wgsl_constants, wgsl_in_place_map, ControlLayout};
    use crate::device::pool::Geometry;
    use crate::kernel::compile_wgsl_named;

    /// Every accessor, so that the whole prelude is compiled and validated (no device needed).
    const ALL: &str = "
fn all(id: u32) {
    let p = unimem_arg_ptr(0u) + u64(id) * 8lu;
    let a = unimem_load_u32(p) + u32(unimem_load_i32(p)) + u32(unimem_load_f32(p));
    let b = unimem_load_u64(p) + u64(unimem_load_i64(p)) + unimem_load_ptr(p) + unimem_arg_u64(2u);
    unimem_store_u32(p, a + unimem_arg_u32(4u));
    unimem_store_i32(p, 1i);
    unimem_store_f32(p, 1.0);
    unimem_store_u64(p, b);
    unimem_store_i64(p, 2li);
    unimem_store_ptr(p, b);
    let c = unimem_atomic_add_u32(p, 1u) + unimem_atomic_min_u32(p, 1u) + unimem_atomic_max_u32(p, 1u)
        + unimem_atomic_exchange_u32(p, 1u) + unimem_atomic_compare_exchange_u32(p, 1u, 2u);
    if (unimem_running()) { unimem_store_u32(p, c); }
}
";

    /// The module over a 1 GiB pool in buffers of `max_buffer_bytes`, binding `bound` of them
    /// (all when `None`).
    fn source(user: &str, max_buffer_bytes: u64, mode: u32, bound: Option<usize>) -> String {
        let g = Geometry::new(65536, 1 << 30, max_buffer_bytes, None).unwrap();
        let layout = ControlLayout { blocks: 1 << 16, frames: g.frames, fault_capacity: 4096 };
        let variant = Variant { mode, buffers: bound.unwrap_or(g.buffers()), in_place: false, wide: false, addressed: false, objects: false };
        module(&wgsl_constants(&g, &layout), g.buffers(), 0x7f00_0000_0000, 1 << 32, user, "all", variant, true)
    }

    /// An in-place module of `user` for `variant`: windows of 128 MiB over 8 frame buffers,
    /// the in-place map `uniform` or not.
    fn in_place_module(user: &str, variant: Variant, uniform: bool) -> String {
        let g = Geometry::new(65536, 1 << 30, 128 << 20, None).unwrap();
        let layout = ControlLayout { blocks: 1 << 16, frames: g.frames, fault_capacity: 4096 };
        let map = wgsl_in_place_map(layout.blocks, uniform);
        let constants = format!("{}const UNIMEM_WINDOW_SHIFT: u32 = 27u;\n{map}", wgsl_constants(&g, &layout));
        module(&constants, g.buffers(), 0x7f00_0000_0000, 1 << 32, user, "all", variant, true)
    }

    /// The in-place module with `windows` windows and their 64-bit views.
    fn in_place_source(user: &str, mode: u32, windows: usize, uniform: bool) -> String {
        in_place_module(user, Variant { mode, buffers: windows, in_place: true, wide: true, addressed: false, objects: false }, uniform)
    }

    #[test]
    fn in_place_windows_follow_the_argument_buffers_in_every_mode() {
        // Arguments at 3 + 8 = 11 (+0..+5), windows from 17.
        // The 64-bit views of the two windows follow them (19, 20); the in-place map takes
        // binding 1, as a uniform or a storage buffer.
        for (mode, uniform) in [(spill::MODE_NORMAL, true), (spill::MODE_NORMAL, false), (spill::MODE_SPILL, true), (MODE_COMMIT, true)] {
            let src = in_place_source(ALL, mode, 2, uniform);
            assert!(src.contains("@binding(17) var<storage, read_write> unimem_frames_0"), "{src}");
            assert!(src.contains("@binding(18) var<storage, read_write> unimem_frames_1") && !src.contains("unimem_frames_2"));
            assert!(src.contains("@binding(20) var<storage, read> unimem_wide_1: array<u64>"));
            assert!(src.contains("@binding(11) var<uniform> unimem_args"));
            let map = if uniform { "@binding(1) var<uniform> unimem_map" } else { "@binding(1) var<storage, read> unimem_map" };
            assert!(src.contains(map) && !src.contains("unimem_dirty:"), "{src}");
            assert!(!src.contains("(loc.x << UNIMEM_FRAME_BUFFER_SHIFT)"), "no frame arithmetic in place");
            let k = compile_wgsl_named("in_place.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
            if mode == spill::MODE_NORMAL {
                let b1 = k.bindings.iter().find(|b| b.binding == 1).expect("the map is used");
                assert_eq!(b1.uniform_bytes, uniform.then_some((1u64 << 16) / 8));
                assert!(!k.bindings.iter().any(|b| b.binding == 0), "in place reads no page table");
            }
        }
    }

    #[test]
    fn at_addresses_no_window_is_bound_in_any_mode() {
        // The runtime's own bindings only (the argument buffers from 11, the map at 1); every
        // access through the placeholders that addresses.rs resolves.
        for mode in [spill::MODE_NORMAL, spill::MODE_SPILL, MODE_COMMIT] {
            let variant = Variant { mode, buffers: 1, in_place: true, wide: false, addressed: true, objects: false };
            let src = in_place_module(ALL, variant, true);
            assert!(!src.contains("unimem_frames_") && !src.contains("unimem_wide_"), "{src}");
            assert!(src.contains("unimem_addr_load64(unimem_loc_addr(loc))") && src.contains("unimem_round.heap_hi"), "{src}");
            let k = compile_wgsl_named("addressed.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
            assert!(k.bindings.iter().all(|b| b.binding < 3 || (11..=16).contains(&b.binding)), "{:?}", k.bindings);
            // Resolved: the module converts addresses to pointers.
            assert_eq!(super::super::addresses::count_op(&k.spirv, spirv::Op::ConvertUToPtr), 8, "every placeholder resolved");
        }
    }

    #[test]
    fn without_64_bit_views_a_window_takes_one_binding() {
        // Many windows (a large heap): 64-bit loads read two words; no wide view is declared.
        let variant = Variant { mode: spill::MODE_NORMAL, buffers: 20, in_place: true, wide: false, addressed: false, objects: true };
        let src = in_place_module(ALL, variant, true);
        assert!(!src.contains("unimem_wide_") && src.contains("@binding(36) var<storage, read_write> unimem_frames_19"), "{src}");
        let k = compile_wgsl_named("narrow.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
        let storage = k.bindings.iter().filter(|b| b.uniform_bytes.is_none()).count();
        assert!(storage <= 20 + OWN_STORAGE_BUFFERS, "{storage} storage buffers: the windows and at most {OWN_STORAGE_BUFFERS} of the runtime's own");
    }

    #[test]
    fn a_variant_that_checks_objects_reads_the_live_map_at_every_access() {
        // The live map at arguments + 4 (11 + 4), in both translations and every mode; no
        // map without object checks.
        let g = Geometry::new(65536, 1 << 30, 128 << 20, None).unwrap();
        let layout = ControlLayout { blocks: 1 << 16, frames: g.frames, fault_capacity: 4096 };
        for in_place in [false, true] {
            for mode in [spill::MODE_NORMAL, spill::MODE_SPILL, MODE_COMMIT] {
                let constants = match in_place {
                    true => format!("{}const UNIMEM_WINDOW_SHIFT: u32 = 27u;\n{}", wgsl_constants(&g, &layout), wgsl_in_place_map(layout.blocks, true)),
                    false => wgsl_constants(&g, &layout),
                };
                for objects in [false, true] {
                    let variant = Variant { mode, buffers: 1, in_place, wide: in_place, addressed: false, objects };
                    let src = module(&constants, g.buffers(), 0x7f00_0000_0000, 1 << 32, ALL, "all", variant, true);
                    assert_eq!(src.contains("@binding(15) var<storage, read> unimem_live: array<u32>;"), objects);
                    let k = compile_wgsl_named("objects.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
                    if mode == spill::MODE_NORMAL {
                        assert_eq!(k.bindings.iter().any(|b| b.binding == 15), objects, "in place {in_place}: the map is read");
                    }
                }
            }
        }
    }

    #[test]
    fn a_variant_binds_only_its_frame_buffers_and_the_arguments_where_they_always_are() {
        // 8 buffers of 128 MiB; the arguments follow all 8 (binding 3 + 8).
        let src = source(ALL, 128 << 20, spill::MODE_NORMAL, Some(2));
        assert!(src.contains("unimem_frames_1:") && !src.contains("unimem_frames_2"));
        assert!(src.contains("@binding(11) var<uniform> unimem_args"), "{src}");
        compile_wgsl_named("bound.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn the_prelude_compiles_with_and_without_atomics() {
        for (buffer_bytes, mode) in [(128 << 20, spill::MODE_NORMAL), (1 << 30, spill::MODE_NORMAL), (1 << 30, spill::MODE_SPILL), (1 << 30, MODE_COMMIT)] {
            let src = source(ALL, buffer_bytes, mode, None);
            let k = compile_wgsl_named("all.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(k.workgroup_size, [64, 1, 1]);
            assert_eq!(k.immediate_size, std::mem::size_of::<Round>() as u32);
            let src = source("fn all(id: u32) { unimem_store_u32(unimem_arg_ptr(0u), unimem_load_u32(unimem_arg_ptr(0u))); }", buffer_bytes, mode, None);
            assert!(!src.contains("unimem_alog"));
            compile_wgsl_named("plain.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The runtime declares only names with a reserved prefix (`check::RESERVED_PREFIXES`) at
    /// module scope, which a kernel cannot declare (`check::reserved_names`), so a kernel's own
    /// names never collide with them (built-ins it uses are `check::shadowed_builtins`).
    #[test]
    fn the_runtime_declares_only_its_own_names() {
        let sources = [source(ALL, 128 << 20, spill::MODE_NORMAL, None), source(ALL, 1 << 30, spill::MODE_SPILL, None), in_place_source(ALL, spill::MODE_NORMAL, 2, true), in_place_source(ALL, MODE_COMMIT, 2, false)];
        for src in &sources {
            let runtime = &src[src.find(USER_END).unwrap()..];
            let names = crate::kernel::check::module_scope_names(runtime);
            assert!(names.len() > 50, "{} names", names.len());
            for (name, _) in names {
                assert!(crate::kernel::check::is_reserved(name), "the runtime declares `{name}`");
            }
        }
    }

    #[test]
    fn error_kinds_have_messages() {
        for k in [
            KERNEL_ERROR_OUT_OF_RANGE,
            KERNEL_ERROR_READ_ONLY,
            KERNEL_ERROR_MISALIGNED,
            KERNEL_ERROR_RUNAWAY,
            KERNEL_ERROR_FREED,
            KERNEL_ERROR_LOOP_BUDGET,
            KERNEL_ERROR_RUNAWAY_LOOP,
            KERNEL_ERROR_ARGUMENT,
        ] {
            assert_ne!(error_kind_text(k), error_kind_text(0), "kind {k}");
        }
    }
}
