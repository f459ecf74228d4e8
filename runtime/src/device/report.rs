//! `DeviceReport`: what a physical device offers, collected once at enumeration.
//!
//! Plain data (no handles), so selection, requirement checks and `unimem info` are pure
//! functions over it and can be unit-tested with made-up devices. [`collect`] is the only
//! function here that talks to Vulkan; it chains the extension structs only when the device
//! supports them (a `pNext` struct the device does not know is invalid usage).

use std::ffi::{c_char, CStr};
use std::fmt;

use ash::vk;

use super::error::DeviceResult;
use super::DeviceError;

/// A packed Vulkan version (`VK_MAKE_API_VERSION`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(pub u32);

impl ApiVersion {
    /// Packs `major.minor.patch` (variant 0).
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        ApiVersion(vk::make_api_version(0, major, minor, patch))
    }
    /// The major version.
    pub const fn major(self) -> u32 {
        vk::api_version_major(self.0)
    }
    /// The minor version.
    pub const fn minor(self) -> u32 {
        vk::api_version_minor(self.0)
    }
    /// The patch version.
    pub const fn patch(self) -> u32 {
        vk::api_version_patch(self.0)
    }
    /// True when this is `major.minor` or newer (the patch is ignored).
    pub const fn at_least(self, major: u32, minor: u32) -> bool {
        self.major() > major || (self.major() == major && self.minor() >= minor)
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.patch())
    }
}

impl fmt::Debug for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The kind of device, in the order unimem prefers them (best first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceKind {
    /// A discrete GPU.
    Discrete,
    /// A GPU sharing memory with the CPU.
    Integrated,
    /// A GPU in a virtualised environment.
    Virtual,
    /// A Vulkan implementation running on the CPU (lavapipe, SwiftShader).
    Cpu,
    /// Anything else.
    Other,
}

impl DeviceKind {
    fn from_vk(t: vk::PhysicalDeviceType) -> Self {
        match t {
            vk::PhysicalDeviceType::DISCRETE_GPU => Self::Discrete,
            vk::PhysicalDeviceType::INTEGRATED_GPU => Self::Integrated,
            vk::PhysicalDeviceType::VIRTUAL_GPU => Self::Virtual,
            vk::PhysicalDeviceType::CPU => Self::Cpu,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Discrete => "discrete GPU",
            Self::Integrated => "integrated GPU",
            Self::Virtual => "virtual GPU",
            Self::Cpu => "CPU",
            Self::Other => "other",
        })
    }
}

/// One memory type of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryTypeInfo {
    /// Its property flags (`HOST_VISIBLE`, `DEVICE_LOCAL`, ...).
    pub flags: vk::MemoryPropertyFlags,
    /// The heap it allocates from.
    pub heap: u32,
}

/// One memory heap of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryHeapInfo {
    /// Its size in bytes.
    pub size: u64,
    /// Its flags (`DEVICE_LOCAL`, ...).
    pub flags: vk::MemoryHeapFlags,
}

/// `VK_EXT_external_memory_host` (import host pages as device memory: mirror mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalMemoryHost {
    /// `minImportedHostPointerAlignment`: imported ranges must be aligned to this.
    pub min_imported_host_pointer_alignment: u64,
}

/// Everything unimem wants to know about one physical device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceReport {
    /// Position in the loader's enumeration order (what `UNIMEM_DEVICE=<n>` refers to).
    pub index: usize,
    /// `deviceName`.
    pub name: String,
    /// `deviceType`.
    pub kind: DeviceKind,
    /// `apiVersion`: the Vulkan version the device supports.
    pub api_version: ApiVersion,
    /// `driverVersion` (vendor-specific encoding).
    pub driver_version: u32,
    /// `vendorID`.
    pub vendor_id: u32,
    /// `deviceID`.
    pub device_id: u32,
    /// `VkPhysicalDeviceDriverProperties::driverName`, when the device reports it (1.2+).
    pub driver_name: Option<String>,
    /// `VkPhysicalDeviceDriverProperties::driverInfo`, when the device reports it (1.2+).
    pub driver_info: Option<String>,
    /// The first queue family with `COMPUTE`, preferring one without `GRAPHICS`.
    pub compute_queue_family: Option<u32>,
    /// `shaderInt64`: 64-bit integers in shaders (host pointers in kernels).
    pub shader_int64: bool,
    /// `shaderFloat64`: 64-bit floats in shaders (`unimem_load_f64` / `unimem_store_f64`).
    pub shader_float64: bool,
    /// `bufferDeviceAddress` (Vulkan 1.2 features).
    pub buffer_device_address: bool,
    /// `variablePointersStorageBuffer` and `variablePointers` (Vulkan 1.1 features).
    pub variable_pointers: bool,
    /// `VK_EXT_external_memory_host`, when supported.
    pub external_memory_host: Option<ExternalMemoryHost>,
    /// `VK_KHR_portability_subset` is offered (and so must be enabled).
    pub portability_subset: bool,
    /// `maxStorageBufferRange`: the largest range one storage-buffer binding can see.
    pub max_storage_buffer_range: u32,
    /// `maxUniformBufferRange`: the largest range one uniform-buffer binding can see.
    pub max_uniform_buffer_range: u32,
    /// `maxPerStageDescriptorStorageBuffers`: storage buffers one shader may bind (32 on
    /// lavapipe; in place, each heap window takes one or two).
    pub max_storage_buffers: u32,
    /// `maxMemoryAllocationSize` (Maintenance3): the largest single allocation.
    pub max_memory_allocation_size: u64,
    /// `maxPushConstantsSize`.
    pub max_push_constants_size: u32,
    /// `maxComputeWorkGroupCount`.
    pub max_compute_work_group_count: [u32; 3],
    /// `maxComputeWorkGroupSize`.
    pub max_compute_work_group_size: [u32; 3],
    /// `maxComputeWorkGroupInvocations`.
    pub max_compute_work_group_invocations: u32,
    /// `minStorageBufferOffsetAlignment`.
    pub min_storage_buffer_offset_alignment: u64,
    /// The memory types, indexed by memory type index.
    pub memory_types: Vec<MemoryTypeInfo>,
    /// The memory heaps, indexed by heap index.
    pub memory_heaps: Vec<MemoryHeapInfo>,
}

impl DeviceReport {
    /// `driver_name`, or `"?"` when the device does not report one.
    pub fn driver_name_or_unknown(&self) -> &str {
        self.driver_name.as_deref().unwrap_or("?")
    }

    /// True when some memory type has all of `flags`.
    pub fn has_memory_type(&self, flags: vk::MemoryPropertyFlags) -> bool {
        self.memory_types.iter().any(|t| t.flags.contains(flags))
    }

    /// True for Mesa's CPU device (driver `llvmpipe`, marketed as lavapipe).
    pub fn is_lavapipe(&self) -> bool {
        let driver = self
            .driver_name
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        driver.contains("llvmpipe")
            || driver.contains("lavapipe")
            || self.name.to_ascii_lowercase().starts_with("llvmpipe")
    }
}

/// Reads a fixed-size, NUL-terminated C string field.
fn c_field(field: &[c_char]) -> String {
    // `c_char` is i8 or u8 depending on the target; `as u8` keeps the bit pattern.
    let bytes: Vec<u8> = field.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Collects the report of `physical`.
///
/// # Safety
/// `physical` must have been enumerated from `instance`, which must be alive, and the
/// instance must have been created with API version 1.1 or newer.
pub(crate) unsafe fn collect(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    index: usize,
) -> DeviceResult<DeviceReport> {
    // SAFETY: the caller guarantees `physical` belongs to the live `instance`.
    let base = unsafe { instance.get_physical_device_properties(physical) };
    let api_version = ApiVersion(base.api_version);

    // SAFETY: as above.
    let extensions = unsafe { instance.enumerate_device_extension_properties(physical) }
        .map_err(DeviceError::at("vkEnumerateDeviceExtensionProperties"))?;
    let has_extension = |name: &CStr| {
        extensions
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(name))
    };
    let has_driver_props =
        api_version.at_least(1, 2) || has_extension(ash::khr::driver_properties::NAME);
    let has_host_import = has_extension(ash::ext::external_memory_host::NAME);
    let is_1_1 = api_version.at_least(1, 1);
    let is_1_2 = api_version.at_least(1, 2);

    // Properties: chain only what the device understands.
    let mut driver = vk::PhysicalDeviceDriverProperties::default();
    let mut maintenance3 = vk::PhysicalDeviceMaintenance3Properties::default();
    let mut host_import = vk::PhysicalDeviceExternalMemoryHostPropertiesEXT::default();
    let mut props2 = vk::PhysicalDeviceProperties2::default();
    if has_driver_props {
        props2 = props2.push_next(&mut driver);
    }
    if is_1_1 {
        props2 = props2.push_next(&mut maintenance3);
    }
    if has_host_import {
        props2 = props2.push_next(&mut host_import);
    }
    // SAFETY: every chained struct is supported by the device (checked above) and lives
    // until the call returns; the instance is 1.1+ (caller's guarantee).
    unsafe { instance.get_physical_device_properties2(physical, &mut props2) };
    // Last use of `props2`: its mutable borrows of the chained structs end here.
    let limits = props2.properties.limits;

    // Features: Vulkan11/12 structs only on 1.2 devices (they are 1.2 structures).
    let mut f11 = vk::PhysicalDeviceVulkan11Features::default();
    let mut f12 = vk::PhysicalDeviceVulkan12Features::default();
    let mut features2 = vk::PhysicalDeviceFeatures2::default();
    if is_1_2 {
        features2 = features2.push_next(&mut f11).push_next(&mut f12);
    }
    // SAFETY: as for the properties.
    unsafe { instance.get_physical_device_features2(physical, &mut features2) };
    let shader_int64 = features2.features.shader_int64 == vk::TRUE;
    let shader_float64 = features2.features.shader_float64 == vk::TRUE;

    // SAFETY: as above.
    let queues = unsafe { instance.get_physical_device_queue_family_properties(physical) };
    let compute_queue_family = pick_compute_queue_family(&queues);

    // SAFETY: as above.
    let memory = unsafe { instance.get_physical_device_memory_properties(physical) };
    let memory_types = memory
        .memory_types_as_slice()
        .iter()
        .map(|t| MemoryTypeInfo {
            flags: t.property_flags,
            heap: t.heap_index,
        })
        .collect();
    let memory_heaps = memory
        .memory_heaps_as_slice()
        .iter()
        .map(|h| MemoryHeapInfo {
            size: h.size,
            flags: h.flags,
        })
        .collect();

    Ok(DeviceReport {
        index,
        name: c_field(&base.device_name),
        kind: DeviceKind::from_vk(base.device_type),
        api_version,
        driver_version: base.driver_version,
        vendor_id: base.vendor_id,
        device_id: base.device_id,
        driver_name: has_driver_props.then(|| c_field(&driver.driver_name)),
        driver_info: has_driver_props.then(|| c_field(&driver.driver_info)),
        compute_queue_family,
        shader_int64,
        shader_float64,
        buffer_device_address: f12.buffer_device_address == vk::TRUE,
        variable_pointers: f11.variable_pointers_storage_buffer == vk::TRUE
            && f11.variable_pointers == vk::TRUE,
        external_memory_host: has_host_import.then_some(ExternalMemoryHost {
            min_imported_host_pointer_alignment: host_import.min_imported_host_pointer_alignment,
        }),
        portability_subset: has_extension(ash::khr::portability_subset::NAME),
        max_storage_buffer_range: limits.max_storage_buffer_range,
        max_uniform_buffer_range: limits.max_uniform_buffer_range,
        max_storage_buffers: limits.max_per_stage_descriptor_storage_buffers,
        max_memory_allocation_size: if is_1_1 {
            maintenance3.max_memory_allocation_size
        } else {
            0 // Vulkan 1.0 cannot report it: 0 means unknown.
        },
        max_push_constants_size: limits.max_push_constants_size,
        max_compute_work_group_count: limits.max_compute_work_group_count,
        max_compute_work_group_size: limits.max_compute_work_group_size,
        max_compute_work_group_invocations: limits.max_compute_work_group_invocations,
        min_storage_buffer_offset_alignment: limits.min_storage_buffer_offset_alignment,
        memory_types,
        memory_heaps,
    })
}

/// The compute queue family: one with `COMPUTE` and without `GRAPHICS` when there is one
/// (dedicated compute queues do not compete with the display), else the first with `COMPUTE`.
pub fn pick_compute_queue_family(families: &[vk::QueueFamilyProperties]) -> Option<u32> {
    let compute = |f: &vk::QueueFamilyProperties| {
        f.queue_count > 0 && f.queue_flags.contains(vk::QueueFlags::COMPUTE)
    };
    families
        .iter()
        .position(|f| compute(f) && !f.queue_flags.contains(vk::QueueFlags::GRAPHICS))
        .or_else(|| families.iter().position(compute))
        .map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_compares_major_minor() {
        let v = ApiVersion::new(1, 3, 230);
        assert_eq!(v.to_string(), "1.3.230");
        assert!(v.at_least(1, 2));
        assert!(v.at_least(1, 3));
        assert!(!v.at_least(1, 4));
        assert!(!ApiVersion::new(1, 1, 999).at_least(1, 2));
        assert!(ApiVersion::new(2, 0, 0).at_least(1, 9));
    }

    #[test]
    fn dedicated_compute_queue_is_preferred() {
        let fam = |flags, count| vk::QueueFamilyProperties {
            queue_flags: flags,
            queue_count: count,
            ..Default::default()
        };
        let gfx = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE;
        let families = [
            fam(gfx, 1),
            fam(vk::QueueFlags::TRANSFER, 1),
            fam(vk::QueueFlags::COMPUTE, 2),
        ];
        assert_eq!(pick_compute_queue_family(&families), Some(2));
        assert_eq!(pick_compute_queue_family(&families[..2]), Some(0));
        assert_eq!(
            pick_compute_queue_family(&[fam(vk::QueueFlags::TRANSFER, 1)]),
            None
        );
        assert_eq!(
            pick_compute_queue_family(&[fam(vk::QueueFlags::COMPUTE, 0)]),
            None
        );
    }

    #[test]
    fn c_fields_stop_at_nul() {
        let mut field = [0 as c_char; 8];
        for (d, s) in field.iter_mut().zip(b"abc") {
            *d = *s as c_char;
        }
        assert_eq!(c_field(&field), "abc");
    }
}
