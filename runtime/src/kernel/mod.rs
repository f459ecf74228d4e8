//! Kernels: WGSL sources compiled to SPIR-V for the device layer.
//!
//! - `compile.rs` — naga front end, validation, interface reflection, SPIR-V output.
//!
//! Later: the WGSL prelude (pointer accessors), launch and the device-fault replay loop.

mod compile;

pub use compile::{
    compile_wgsl, compile_wgsl_named, CompileError, CompiledKernel, StorageBinding, CAPABILITIES,
    SPIRV_VERSION,
};
