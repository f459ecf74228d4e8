//! Kernels: WGSL sources compiled to SPIR-V for the device layer, and kernels on shared
//! pointers.
//!
//! - `compile.rs` — naga front end, validation, interface reflection, SPIR-V output;
//! - `addresses.rs` — a SPIR-V pass: in-place accessors that load through physical
//!   addresses (`PhysicalStorageBuffer` pointers), which WGSL cannot write;
//! - `check.rs`   — the rules a user kernel follows beyond valid WGSL (signature, no
//!   resources, barriers or runtime internals of its own);
//! - `guard.rs`   — a counter in every loop of the user's code, so that no kernel runs for
//!   ever;
//! - `prelude.rs` — the WGSL prelude: bindings, pointer accessors, restartable stores and
//!   atomics (the kernel ABI);
//! - `spill.rs`   — spill slots: restarting invocations whose logs overflowed, exactly;
//! - `discover.rs` — before a launch, the blocks reachable from its arguments' data through
//!   stored pointers (migrating mode's prefetch);
//! - `pacing.rs` — replay rounds chosen by invocation when the pool is oversubscribed;
//! - `parking.rs` — unpaced rounds: pending invocations kept off the id list by the block
//!   they wait on;
//! - `sites.rs`   — which access or loop of the user's source an invocation stopped at;
//! - `objects.rs` — the live map: accesses checked against live allocations
//!   (`UNIMEM_CHECK_OBJECTS`);
//! - `places.rs`  — what a bad address is, for error messages (an argument word, the stack,
//!   an overrun, a global, another allocator's memory, ...);
//! - `launch.rs`  — [`Kernel`], [`Args`], the launch protocol and the device-fault replay loop.

mod addresses;
mod check;
mod compile;
mod discover;
mod guard;
mod launch;
mod objects;
mod pacing;
mod parking;
mod places;
pub mod prelude;
mod sites;
pub mod spill;

pub use compile::{
    compile_wgsl, compile_wgsl_checked, compile_wgsl_named, CompileError, CompiledKernel, StorageBinding, Violation, CAPABILITIES,
    SPIRV_VERSION,
};
pub use launch::{
    generated_source, Args, Kernel, KernelOptions, LaunchError, LaunchReport, CHUNK, DEFAULT_MAX_STEPS, KEPT_PIPELINES, LAVAPIPE_MAX_STEPS,
    MAX_ROUNDS, PREFETCH_BLOCKS,
};
