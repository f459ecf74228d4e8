//! unimem: user-space heterogeneous memory management on Vulkan.
//!
//! Modules (see `/work/shared/design/brief.md` for the layering):
//! - [`device`]  — Vulkan through ash: loader, instance, device selection, buffers,
//!   compute pipelines, synchronous dispatch;
//! - [`kernel`]  — WGSL -> SPIR-V with naga;
//! - [`faults`]  — CPU fault mechanisms (for now: probing which ones work);
//! - [`info`]    — the `unimem info` report;
//! - [`advice`]  — remembered `advise` ranges and what launches do with them;
//! - [`options`] — the `UNIMEM_*` environment variables this crate reads;
//! - [`alloc`]   — the shared-virtual-address allocator (`unimem-alloc`), re-exported.
//!
//! A Rust program puts its whole heap in shared virtual memory with
//! `#[global_allocator] static A: unimem::Allocator = unimem::Allocator;`.

#![warn(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod advice;
mod api;
pub mod coherence;
pub mod device;
pub mod faults;
pub mod info;
#[cfg(feature = "interpose")]
pub mod interpose;
pub mod kernel;
pub mod options;

/// The shared-virtual-address allocator: everything of `unimem-alloc`.
pub use unimem_alloc as alloc;
pub use api::{advise, discard, prefetch, runtime, stats, sync, vulkan_runtime, Advice, Error, Location};
pub use kernel::{Args, Kernel, KernelOptions, LaunchReport};
pub use unimem_alloc::{Allocator, HeapKind, InternalScope};
