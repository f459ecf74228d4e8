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
//! <layout constants of pagetable.rs>  <UNIMEM_BASE, UNIMEM_ARENA_BYTES, log sizes>
//! bindings 0, 1, 2, frames (pagetable.rs), then at UNIMEM_FIRST_ARG_BINDING:
//!   +0 unimem_args : array<u32>           the launch arguments, by word
//!   +1 unimem_ctl  : array<atomic<u32>>   control: pending lists, poison list
//!   +2 unimem_alog : array<u32>           atomic-result log (only when the kernel uses atomics)
//! [PRELUDE below]  <user source>  the entry point `unimem_main`, which calls the user's fn.
//! ```
//!
//! Control buffer (`u32` words): `CTL_PENDING_COUNT` (invocations that faulted this round,
//! appended by the kernel), `CTL_POISON_COUNT` and `CTL_POISON_AT..` (blocks the runtime
//! found to hold no live allocation: an access there is an error, not a fault), then two
//! lists of invocation ids of `n` words each, used in turn as the round's input and output.
//!
//! # Restartability (docs/MEMORY-MODEL.md states the rule for users)
//!
//! An invocation runs in a round until it completes, faults, or errs. A fault (a block without
//! a device copy) stops it: every later accessor call returns 0 and does nothing, the entry
//! point appends its id to the output list, and the runtime replays it from the start next
//! round. So that a replay never applies an effect twice:
//! - **stores** go to a private per-invocation log (`UNIMEM_STORE_LOG` words), which loads
//!   consult first (an invocation reads its own writes); the log is written to memory, and the
//!   blocks marked dirty, only when the invocation completes. When the log is full, stores to
//!   addresses not in it go straight to memory and the invocation becomes *unreplayable*;
//! - **atomics** execute at once (their effect is visible to other invocations); the result
//!   of the k-th atomic of an invocation is saved in `unimem_alog`, and a replay returns the
//!   saved result instead of executing it again. Past `UNIMEM_ATOMIC_LOG` atomics the
//!   invocation becomes unreplayable.
//!
//! An unreplayable invocation that faults ends the launch with an error
//! (`ERROR_UNREPLAYABLE`), never with a duplicated effect.
//! A replay must take the same path as the first run up to the fault (the kernel is a function
//! of its id, its arguments, memory no other invocation of the launch writes, and its atomics'
//! results), which holds for kernels without data races.

use std::fmt::Write as _;

use crate::device::pagetable::{KERNEL_ERROR_OUT_OF_RANGE, KERNEL_ERROR_READ_ONLY};

/// Kernel error kind: an access not aligned to 4 bytes.
pub const KERNEL_ERROR_MISALIGNED: u32 = 3;
/// Kernel error kind: an invocation made more accesses in one round than the step limit.
pub const KERNEL_ERROR_RUNAWAY: u32 = 4;
/// Kernel error kind: an access to a block that holds no live allocation (freed memory).
pub const KERNEL_ERROR_FREED: u32 = 5;
/// Kernel error kind: a fault after the store or atomic log overflowed.
pub const KERNEL_ERROR_UNREPLAYABLE: u32 = 6;

/// Words of an invocation's private store log.
pub const STORE_LOG: u32 = 32;
/// Saved atomic results per invocation.
pub const ATOMIC_LOG: u32 = 7;

/// Control word: invocations that faulted this round.
pub const CTL_PENDING_COUNT: usize = 0;
/// Control word: entries of the poison list.
pub const CTL_POISON_COUNT: usize = 1;
/// Control word: first entry of the poison list.
pub const CTL_POISON_AT: usize = 4;
/// Entries of the poison list.
pub const CTL_POISON_CAPACITY: usize = 28;
/// Word index of the first id list.
pub const CTL_LISTS_AT: usize = CTL_POISON_AT + CTL_POISON_CAPACITY;

/// Words of the control buffer for `n` invocations.
pub fn ctl_words(n: u32) -> usize {
    CTL_LISTS_AT + 2 * n as usize
}

/// The per-round immediates (`UnimemRound` in WGSL).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Round {
    /// Invocations in this round.
    pub count: u32,
    /// Word index of this round's id list; 0: ids are `0..count`.
    pub in_at: u32,
    /// Word index of the list faulted ids are appended to.
    pub out_at: u32,
    /// Accessor calls one invocation may make in one round.
    pub max_steps: u32,
}

/// Why a kernel error kind happened, for messages.
pub fn error_kind_text(kind: u32) -> &'static str {
    match kind {
        KERNEL_ERROR_OUT_OF_RANGE => "dereferenced a pointer outside unimem's managed heap",
        KERNEL_ERROR_READ_ONLY => "stored to a block mapped read-only",
        KERNEL_ERROR_MISALIGNED => "made an access not aligned to 4 bytes",
        KERNEL_ERROR_RUNAWAY => "exceeded the step limit of accessor calls per invocation (a runaway loop, e.g. a cycle in a list? Kernel::set_max_steps raises the limit; lavapipe runs at most 65535 loop iterations per invocation)",
        KERNEL_ERROR_FREED => "dereferenced a pointer into memory that holds no live allocation (freed?)",
        KERNEL_ERROR_UNREPLAYABLE => {
            "faulted after its store log or atomic log overflowed, so it cannot be replayed"
        }
        _ => "reported an unknown error",
    }
}

/// True when `user` calls atomic accessors (the atomic log is bound only then).
pub fn uses_atomics(user: &str) -> bool {
    user.contains("unimem_atomic_")
}

/// The whole module for `user` (which defines `fn entry(id: u32)`): `constants` are the
/// device layer's (`VulkanBlockDevice::wgsl_constants`), `frame_buffers` its count, `base`
/// and `arena_bytes` the managed range the page table covers.
pub fn module(
    constants: &str,
    frame_buffers: usize,
    base: u64,
    arena_bytes: u64,
    user: &str,
    entry: &str,
) -> String {
    let atomics = uses_atomics(user);
    let mut s = String::with_capacity(16 << 10);
    s.push_str(constants);
    let _ = writeln!(s, "const UNIMEM_BASE: u64 = {base}lu;");
    let _ = writeln!(s, "const UNIMEM_ARENA_BYTES: u64 = {arena_bytes}lu;");
    let _ = writeln!(s, "const UNIMEM_STORE_LOG: u32 = {STORE_LOG}u;");
    let _ = writeln!(s, "const UNIMEM_ATOMIC_LOG: u32 = {ATOMIC_LOG}u;");
    let _ = writeln!(s, "const UNIMEM_CTL_PENDING_COUNT: u32 = {CTL_PENDING_COUNT}u;");
    let _ = writeln!(s, "const UNIMEM_CTL_POISON_COUNT: u32 = {CTL_POISON_COUNT}u;");
    let _ = writeln!(s, "const UNIMEM_CTL_POISON_AT: u32 = {CTL_POISON_AT}u;");
    for (name, v) in [
        ("MISALIGNED", KERNEL_ERROR_MISALIGNED),
        ("RUNAWAY", KERNEL_ERROR_RUNAWAY),
        ("FREED", KERNEL_ERROR_FREED),
        ("UNREPLAYABLE", KERNEL_ERROR_UNREPLAYABLE),
    ] {
        let _ = writeln!(s, "const UNIMEM_ERROR_{name}: u32 = {v}u;");
    }
    s.push_str(
        "@group(0) @binding(0) var<storage, read> unimem_pt: array<u32>;
@group(0) @binding(1) var<storage, read_write> unimem_dirty: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read_write> unimem_faults: array<atomic<u32>>;
",
    );
    // Frames are atomic only for kernels that use atomics: plain loads vectorise (lavapipe
    // runs atomic loads lane by lane, ~10x slower on a pointer chase).
    let frame_ty = if atomics { "array<atomic<u32>>" } else { "array<u32>" };
    for i in 0..frame_buffers {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> unimem_frames_{i}: {frame_ty};",
            3 + i
        );
    }
    let first = 3 + frame_buffers;
    let _ = writeln!(
        s,
        "@group(0) @binding({first}) var<storage, read> unimem_args: array<u32>;"
    );
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<storage, read_write> unimem_ctl: array<atomic<u32>>;",
        first + 1
    );
    if atomics {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> unimem_alog: array<u32>;",
            first + 2
        );
    }
    // Frame access: one switch over the frame buffers per access.
    let cases = |body: &str| -> String {
        (0..frame_buffers)
            .map(|i| format!("        case {i}u: {{ {} }}\n", body.replace('#', &i.to_string())))
            .collect()
    };
    let _ = write!(
        s,
        "
fn unimem_frame_load(loc: vec2<u32>) -> u32 {{
    switch loc.x {{
{}        default: {{ return 0u; }}
    }}
}}

fn unimem_frame_store(loc: vec2<u32>, v: u32) {{
    switch loc.x {{
{}        default: {{ }}
    }}
}}
",
        cases(if atomics { "return atomicLoad(&unimem_frames_#[loc.y]);" } else { "return unimem_frames_#[loc.y];" }),
        cases(if atomics { "atomicStore(&unimem_frames_#[loc.y], v);" } else { "unimem_frames_#[loc.y] = v;" }),
    );
    if atomics {
        for (op, call) in [
            ("add", "atomicAdd(&unimem_frames_#[loc.y], v)"),
            ("min", "atomicMin(&unimem_frames_#[loc.y], v)"),
            ("max", "atomicMax(&unimem_frames_#[loc.y], v)"),
            ("exchange", "atomicExchange(&unimem_frames_#[loc.y], v)"),
        ] {
            let _ = write!(
                s,
                "
fn unimem_frame_{op}(loc: vec2<u32>, c: u32, v: u32) -> u32 {{
    switch loc.x {{
{}        default: {{ return 0u; }}
    }}
}}
",
                cases(&format!("return {call};"))
            );
        }
        // Weak compare-exchange may fail spuriously (old value equal, not exchanged): retry.
        let _ = write!(
            s,
            "
fn unimem_frame_cas(loc: vec2<u32>, c: u32, v: u32) -> u32 {{
    switch loc.x {{
{}        default: {{ }}
    }}
    return 0u;
}}
",
            cases(
                "loop { let r = atomicCompareExchangeWeak(&unimem_frames_#[loc.y], c, v); \
                 if (r.exchanged || r.old_value != c) { return r.old_value; } }"
            )
        );
    }
    s.push_str(&unrolled());
    s.push_str(PRELUDE);
    if atomics {
        s.push_str(ATOMICS);
    }
    s.push_str("\n// ---- user kernel ----\n");
    s.push_str(user);
    let _ = write!(
        s,
        "
// ---- entry point (runtime) ----
@compute @workgroup_size(64)
fn unimem_main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {{
    let i = g.y * nw.x * 64u + g.x;
    if (i >= unimem_round.count) {{
        return;
    }}
    var id = i;
    if (unimem_round.in_at != 0u) {{
        id = atomicLoad(&unimem_ctl[unimem_round.in_at + i]);
    }}
    unimem_id = id;
    {entry}(id);
    unimem_finish();
}}
"
    );
    s
}

/// The prelude's loops, unrolled. lavapipe (gallivm) gives each shader invocation a budget of
/// 65535 loop iterations in total and silently cuts every loop short once it is spent, so the
/// prelude has no loops: its costs never eat the user's budget, and committing the store log
/// cannot be cut short.
fn unrolled() -> String {
    let mut s = String::new();
    s.push_str("\nfn unimem_poisoned(b: u32) -> bool {\n    let n = atomicLoad(&unimem_ctl[UNIMEM_CTL_POISON_COUNT]);\n");
    for k in 0..CTL_POISON_CAPACITY {
        let _ = writeln!(
            s,
            "    if ({k}u >= n) {{ return false; }} if (atomicLoad(&unimem_ctl[UNIMEM_CTL_POISON_AT + {k}u]) == b) {{ return true; }}"
        );
    }
    s.push_str("    return false;\n}\n");
    s.push_str("\n// 1 + the index of p's entry in the store log, or 0.\nfn unimem_log_find(p: u64) -> u32 {\n    let n = unimem_log_n;\n");
    for k in 0..STORE_LOG {
        let _ = writeln!(
            s,
            "    if ({k}u >= n) {{ return 0u; }} if (unimem_log_addr[{k}u] == p) {{ return {}u; }}",
            k + 1
        );
    }
    s.push_str("    return 0u;\n}\n");
    s.push_str("\nfn unimem_flush_log() {\n    let n = unimem_log_n;\n");
    for k in 0..STORE_LOG {
        let _ = writeln!(s, "    if ({k}u >= n) {{ unimem_log_n = 0u; return; }} unimem_flush_entry({k}u);");
    }
    s.push_str("    unimem_log_n = 0u;\n}\n");
    s
}

/// The fixed part of the prelude (after bindings and frame access).
pub const PRELUDE: &str = r#"
struct UnimemRound { count: u32, in_at: u32, out_at: u32, max_steps: u32 }
var<immediate> unimem_round: UnimemRound;

// Per-invocation state (private: starts afresh on every run, including replays).
var<private> unimem_id: u32;
// 0 running, 1 faulted (replay), 2 error (never replayed).
var<private> unimem_stop: u32 = 0u;
var<private> unimem_unreplayable: bool = false;
var<private> unimem_steps: u32 = 0u;
var<private> unimem_atomics: u32 = 0u;
// Why the invocation stopped (kept privately; written to the fault buffer once, by
// unimem_finish: recording in the accessors themselves made every access ~5x slower on
// lavapipe, which runs the never-taken atomics masked, lane by lane).
var<private> unimem_stop_addr: u64 = 0lu;
var<private> unimem_stop_kind: u32 = 0u;
var<private> unimem_stop_block: u32 = 0u;
// Store log: word addresses and values, committed when the invocation completes.
var<private> unimem_log_addr: array<u64, UNIMEM_STORE_LOG>;
var<private> unimem_log_val: array<u32, UNIMEM_STORE_LOG>;
var<private> unimem_log_n: u32 = 0u;

const UNIMEM_FAIL: vec2<u32> = vec2<u32>(0xffffffffu, 0u);

// Stops the invocation: kind 0 is a fault on `block` (replay), others are errors.
fn unimem_stop_with(kind: u32, p: u64, block: u32) {
    unimem_stop = select(1u, 2u, kind != 0u);
    unimem_stop_kind = kind;
    unimem_stop_addr = p;
    unimem_stop_block = block;
}

fn unimem_report_error(kind: u32, p: u64) {
    let c = atomicAdd(&unimem_faults[UNIMEM_FAULT_ERROR_COUNT], 1u);
    if (c == 0u) {
        atomicStore(&unimem_faults[UNIMEM_FAULT_ERROR_KIND], kind);
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

// Where the word at p lives: (frame buffer, word), or UNIMEM_FAIL after stopping the
// invocation (fault or error), or when it already stopped. Counts a step.
fn unimem_translate(p: u64, write: bool) -> vec2<u32> {
    // Branch-free until the one test below (each divergent branch is paid by every lane).
    unimem_steps += 1u;
    let off = p - UNIMEM_BASE;
    let in_range = p >= UNIMEM_BASE && off < UNIMEM_ARENA_BYTES;
    let b = select(0u, u32(off >> UNIMEM_BLOCK_SHIFT), in_range);
    let e = unimem_pt[b];
    let f1 = e & UNIMEM_PTE_FRAME_MASK;
    var kind = select(0u, UNIMEM_ERROR_READ_ONLY, write && (e & UNIMEM_PTE_WRITABLE) == 0u && f1 != 0u);
    kind = select(kind, UNIMEM_ERROR_RUNAWAY, unimem_steps > unimem_round.max_steps);
    kind = select(kind, UNIMEM_ERROR_MISALIGNED, (u32(p & 0xfffffffflu) & 3u) != 0u);
    kind = select(kind, UNIMEM_ERROR_OUT_OF_RANGE, !in_range);
    if (kind != 0u || f1 == 0u || unimem_stop != 0u) {
        if (unimem_stop == 0u) {
            unimem_stop_with(kind, p, b);
        }
        return UNIMEM_FAIL;
    }
    let f = f1 - 1u;
    let w = (u32(off & 0xfffffffflu) & (UNIMEM_BLOCK_SIZE - 1u)) >> 2u;
    return vec2<u32>(f >> UNIMEM_FRAME_BUFFER_SHIFT,
                     ((f & (UNIMEM_FRAMES_PER_BUFFER - 1u)) << (UNIMEM_BLOCK_SHIFT - 2u)) + w);
}

fn unimem_set_dirty(loc: vec2<u32>) {
    let f = (loc.x << UNIMEM_FRAME_BUFFER_SHIFT) | (loc.y >> (UNIMEM_BLOCK_SHIFT - 2u));
    atomicOr(&unimem_dirty[f >> 5u], 1u << (f & 31u));
}

// Writes store-log entry k to memory (every logged block was resident when logged, and
// nothing is evicted during a round).
fn unimem_flush_entry(k: u32) {
    let p = unimem_log_addr[k];
    let off = p - UNIMEM_BASE;
    let e = unimem_pt[u32(off >> UNIMEM_BLOCK_SHIFT)];
    let f = (e & UNIMEM_PTE_FRAME_MASK) - 1u;
    let w = (u32(off & 0xfffffffflu) & (UNIMEM_BLOCK_SIZE - 1u)) >> 2u;
    let loc = vec2<u32>(f >> UNIMEM_FRAME_BUFFER_SHIFT,
                        ((f & (UNIMEM_FRAMES_PER_BUFFER - 1u)) << (UNIMEM_BLOCK_SHIFT - 2u)) + w);
    unimem_frame_store(loc, unimem_log_val[k]);
    unimem_set_dirty(loc);
}

fn unimem_finish() {
    if (unimem_stop == 0u) {
        unimem_flush_log();
        return;
    }
    var kind = unimem_stop_kind;
    if (kind == 0u && unimem_poisoned(unimem_stop_block)) {
        // A block the runtime found without live allocations: an error, not a fault.
        kind = UNIMEM_ERROR_FREED;
    }
    if (kind == 0u && unimem_unreplayable) {
        kind = UNIMEM_ERROR_UNREPLAYABLE;
    }
    if (kind != 0u) {
        unimem_report_error(kind, unimem_stop_addr);
        return;
    }
    unimem_report_fault(unimem_stop_block);
    let k = atomicAdd(&unimem_ctl[UNIMEM_CTL_PENDING_COUNT], 1u);
    atomicStore(&unimem_ctl[unimem_round.out_at + k], unimem_id);
}

// ---- public accessors ----

// True until the invocation faulted or erred; after that, accessors return 0 and do nothing.
// A loop that may not end by itself should test it.
fn unimem_running() -> bool {
    return unimem_stop == 0u;
}

fn unimem_arg_u32(i: u32) -> u32 {
    return unimem_args[i];
}

fn unimem_arg_u64(i: u32) -> u64 {
    return u64(unimem_args[i]) | (u64(unimem_args[i + 1u]) << 32u);
}

fn unimem_arg_ptr(i: u32) -> u64 {
    return unimem_arg_u64(i);
}

fn unimem_load_u32(p: u64) -> u32 {
    let loc = unimem_translate(p, false);
    // No early return: UNIMEM_FAIL falls to the switch's default, 0 (branches cost all lanes).
    var v = unimem_frame_load(loc);
    if (unimem_log_n != 0u) {
        let k = unimem_log_find(p);
        if (k != 0u && loc.x != 0xffffffffu) {
            v = unimem_log_val[k - 1u];
        }
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
    // One translation unless the second word starts the next block.
    let loc = unimem_translate(p, false);
    var hi_loc = vec2<u32>(loc.x, loc.y + 1u);
    if ((u32(p & 0xfffffffflu) & (UNIMEM_BLOCK_SIZE - 1u)) == UNIMEM_BLOCK_SIZE - 4u) {
        hi_loc = unimem_translate(p + 4lu, false);
    }
    var lo = unimem_frame_load(loc);
    var hi = select(unimem_frame_load(hi_loc), 0u, loc.x == 0xffffffffu);
    if (unimem_log_n != 0u && loc.x != 0xffffffffu && hi_loc.x != 0xffffffffu) {
        let k = unimem_log_find(p);
        if (k != 0u) {
            lo = unimem_log_val[k - 1u];
        }
        let j = unimem_log_find(p + 4lu);
        if (j != 0u) {
            hi = unimem_log_val[j - 1u];
        }
    }
    return u64(lo) | (u64(hi) << 32u);
}

fn unimem_load_i64(p: u64) -> i64 {
    return bitcast<i64>(unimem_load_u64(p));
}

fn unimem_load_ptr(p: u64) -> u64 {
    return unimem_load_u64(p);
}

fn unimem_store_u32(p: u64, v: u32) {
    let loc = unimem_translate(p, true);
    if (loc.x == 0xffffffffu) {
        return;
    }
    let k = unimem_log_find(p);
    if (k != 0u) {
        unimem_log_val[k - 1u] = v;
        return;
    }
    if (unimem_log_n == UNIMEM_STORE_LOG) {
        // Full: store through; from here on a fault cannot be replayed. (Loads stay right:
        // an address is either in the log, which has its latest value, or written here.)
        unimem_unreplayable = true;
        unimem_frame_store(loc, v);
        unimem_set_dirty(loc);
        return;
    }
    unimem_log_addr[unimem_log_n] = p;
    unimem_log_val[unimem_log_n] = v;
    unimem_log_n += 1u;
}

fn unimem_store_i32(p: u64, v: i32) {
    unimem_store_u32(p, bitcast<u32>(v));
}

fn unimem_store_f32(p: u64, v: f32) {
    unimem_store_u32(p, bitcast<u32>(v));
}

fn unimem_store_u64(p: u64, v: u64) {
    unimem_store_u32(p, u32(v & 0xfffffffflu));
    unimem_store_u32(p + 4lu, u32(v >> 32u));
}

fn unimem_store_i64(p: u64, v: i64) {
    unimem_store_u64(p, bitcast<u64>(v));
}
"#;

/// Atomic accessors (added only when the kernel uses them; they need the atomic log).
pub const ATOMICS: &str = r#"
// Runs atomic `op` at p once per invocation, however often the invocation is replayed.
fn unimem_atomic(op: u32, p: u64, c: u32, v: u32) -> u32 {
    if (unimem_stop != 0u) {
        return 0u;
    }
    let k = unimem_atomics;
    unimem_atomics += 1u;
    let slot = unimem_id * (UNIMEM_ATOMIC_LOG + 1u);
    if (k < unimem_alog[slot]) {
        return unimem_alog[slot + 1u + k]; // done in an earlier run of this invocation
    }
    let loc = unimem_translate(p, true);
    if (loc.x == 0xffffffffu) {
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
    if (k < UNIMEM_ATOMIC_LOG) {
        unimem_alog[slot + 1u + k] = r;
        unimem_alog[slot] = k + 1u;
    } else {
        unimem_unreplayable = true;
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
    use crate::device::pagetable::{wgsl_constants, ControlLayout};
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
    let c = unimem_atomic_add_u32(p, 1u) + unimem_atomic_min_u32(p, 1u) + unimem_atomic_max_u32(p, 1u)
        + unimem_atomic_exchange_u32(p, 1u) + unimem_atomic_compare_exchange_u32(p, 1u, 2u);
    if (unimem_running()) { unimem_store_u32(p, c); }
}
";

    fn source(user: &str, max_buffer_bytes: u64) -> String {
        let g = Geometry::new(65536, 1 << 30, max_buffer_bytes, None).unwrap();
        let layout = ControlLayout { blocks: 1 << 16, frames: g.frames, fault_capacity: 4096 };
        module(&wgsl_constants(&g, &layout), g.buffers(), 0x7f00_0000_0000, 1 << 32, user, "all")
    }

    #[test]
    fn the_prelude_compiles_with_and_without_atomics() {
        for buffer_bytes in [128 << 20, 1 << 30] {
            let src = source(ALL, buffer_bytes);
            let k = compile_wgsl_named("all.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(k.workgroup_size, [64, 1, 1]);
            assert_eq!(k.immediate_size, 16);
            let src = source("fn all(id: u32) { unimem_store_u32(unimem_arg_ptr(0u), unimem_load_u32(unimem_arg_ptr(0u))); }", buffer_bytes);
            assert!(!src.contains("unimem_alog"));
            compile_wgsl_named("plain.wgsl", &src, "unimem_main").unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn error_kinds_have_messages() {
        for k in [KERNEL_ERROR_OUT_OF_RANGE, KERNEL_ERROR_READ_ONLY, KERNEL_ERROR_MISALIGNED, KERNEL_ERROR_RUNAWAY, KERNEL_ERROR_FREED, KERNEL_ERROR_UNREPLAYABLE] {
            assert_ne!(error_kind_text(k), error_kind_text(0), "kind {k}");
        }
    }
}
