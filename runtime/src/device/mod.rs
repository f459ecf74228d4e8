//! The device layer: Vulkan through ash, kept thin.
//!
//! Files and what they own:
//! - `error.rs`     — [`DeviceError`]: loader failures and `VkResult`s mapped to actionable errors;
//! - `instance.rs`  — loading libvulkan at run time, the `VkInstance`, enumerating [`Adapter`]s;
//! - `report.rs`    — [`DeviceReport`]: what a physical device offers (plain data);
//! - `select.rs`    — the [`REQUIREMENTS`] list (the only one) and the selection policy;
//! - `logical.rs`   — [`Device`]: logical device, compute queue, synchronous dispatch;
//! - `buffer.rs`    — [`Buffer`]: mapped host-visible storage buffers, memory type choice;
//! - `pipeline.rs`  — [`ComputePipeline`]: compute pipelines from [`crate::kernel::CompiledKernel`];
//! - `validation.rs` — validation-layer messages to stderr, counted for tests;
//! - `pool.rs`      — frame-pool arithmetic: geometry, free list, owners, LRU (no Vulkan);
//! - `pagetable.rs` — layout of the device page table, dirty words and fault buffer, and
//!   the host-side views of them (no Vulkan);
//! - `staging.rs`   — the staging ring and `vkCmdCopyBuffer` copies;
//! - `migrate.rs`   — [`VulkanBlockDevice`]: the migration engine (coherence's `BlockDevice`);
//! - `evict.rs`     — [`upload_evicting`]: upload with LRU eviction, for tests and benches;
//! - `mirror.rs`    — mirror mode: host memory imported in place (`Device::import_host`);
//! - `test_support.rs` — the "skip or fail when there is no device" rule for tests.
//!
//! Shared contract: public methods are safe and validate their arguments (sizes, limits,
//! ownership) before reaching Vulkan; the `unsafe` blocks below them carry `// SAFETY:`
//! comments and the crate-private `unsafe fn`s carry `# Safety` sections. Every object holds
//! an `Arc` to its parent, so destruction order (objects, device, instance, loader) follows
//! from ownership. A device that timed out or was lost is *poisoned*: it leaks instead of
//! destroying objects pending work may still use.

mod buffer;
mod error;
mod evict;
mod instance;
mod logical;
mod migrate;
mod mirror;
pub mod pagetable;
mod pipeline;
pub mod pool;
mod report;
pub mod select;
mod staging;
pub mod test_support;
mod validation;

pub use buffer::{find_memory_type, Buffer};
pub use error::{DeviceError, DeviceResult, INSTALL_HINT};
pub use evict::{upload_evicting, EvictionStats};
pub use instance::{Adapter, Instance, REQUIRED_API, VALIDATION_LAYER};
pub use logical::{Device, DEFAULT_TIMEOUT};
pub use migrate::{default_pool_bytes, resolve_copy_mode, MigrateConfig, VulkanBlockDevice};
pub use mirror::check_import;
pub use pagetable::{FaultReport, KernelError};
pub use pipeline::{live_pipelines, pipelines_created, ComputePipeline};
pub use report::{
    pick_compute_queue_family, ApiVersion, DeviceKind, DeviceReport, ExternalMemoryHost,
    MemoryHeapInfo, MemoryTypeInfo,
};
pub use select::{Requirement, REQUIREMENTS};
pub use validation::{validation_errors, validation_warnings};

/// Everything `unimem info` shows about Vulkan on this machine.
#[derive(Debug)]
pub struct VulkanSurvey {
    /// The loader library that was opened.
    pub library: String,
    /// The loader's instance version.
    pub loader_version: ApiVersion,
    /// Whether the validation layer is enabled.
    pub validation: bool,
    /// Every device, in enumeration order.
    pub devices: Vec<DeviceReport>,
    /// The device `Device::open` would pick, or why none.
    pub selected: Result<usize, DeviceError>,
}

/// Loads the loader, enumerates the devices and applies the selection policy, without
/// opening any device. Fails only when there is no loader or no device at all.
pub fn survey() -> DeviceResult<(std::sync::Arc<Instance>, Vec<Adapter>, VulkanSurvey)> {
    let instance = Instance::new()?;
    let adapters = instance.adapters()?;
    let devices: Vec<DeviceReport> = adapters.iter().map(|a| a.report.clone()).collect();
    let selected = select::choose(&devices, crate::options::DEVICE.value().as_deref());
    let survey = VulkanSurvey {
        library: instance.library().to_owned(),
        loader_version: instance.loader_version(),
        validation: instance.validation_enabled(),
        devices,
        selected,
    };
    Ok((instance, adapters, survey))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_objects_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Instance>();
        check::<Adapter>();
        check::<Device>();
        check::<Buffer>();
        check::<ComputePipeline>();
        check::<DeviceError>();
        check::<VulkanBlockDevice>();
    }
}
