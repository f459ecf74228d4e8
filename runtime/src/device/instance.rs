//! The Vulkan loader and instance: loading `libvulkan` at run time, creating the instance,
//! and enumerating the physical devices as [`Adapter`]s.
//!
//! No link-time dependency on libvulkan: the loader is opened with `dlopen` through
//! `ash::Entry::load` (or `load_from` when `UNIMEM_VULKAN_LIBRARY` is set), so a machine
//! without Vulkan can still run the CPU side and print a useful diagnosis.
//!
//! Instance policy:
//! - API version 1.2 (the minimum unimem supports; devices report their own version);
//! - `VK_KHR_portability_enumeration` enabled when the loader offers it, so portability
//!   drivers (MoltenVK-like) are listed too;
//! - `VK_LAYER_KHRONOS_validation` enabled in debug builds when it is installed, with its
//!   messages routed to stderr and counted (`validation.rs`).
//!
//! Drop order: the `ash::Instance` is destroyed in `Drop`, then the `ash::Entry` (which owns
//! the loaded library) is dropped as a field, so the library outlives every call into it.
//! Everything created from the instance holds an `Arc<Instance>`.

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use ash::vk;

use super::error::{DeviceError, DeviceResult};
use super::report::{self, ApiVersion, DeviceReport};
use super::validation::{self, Messenger};
use crate::options;

/// The validation layer enabled in debug builds when installed.
pub const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// The API version unimem asks for and requires of devices.
pub const REQUIRED_API: ApiVersion = ApiVersion::new(1, 2, 0);

/// The library `ash::Entry::load` opens on Linux.
const DEFAULT_LIBRARY: &str = "libvulkan.so.1";

/// A loaded Vulkan loader plus a created `VkInstance`.
pub struct Instance {
    raw: ash::Instance,
    /// Present when validation is on; destroyed before `raw`.
    messenger: Option<Messenger>,
    /// Declared after `raw`: the loader library must outlive the instance handle.
    entry: ash::Entry,
    library: String,
    loader_version: ApiVersion,
    validation: bool,
    portability_enumeration: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("library", &self.library)
            .field("loader_version", &self.loader_version)
            .field("validation", &self.validation)
            .field("portability_enumeration", &self.portability_enumeration)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Loads the loader (honouring `UNIMEM_VULKAN_LIBRARY`) and creates an instance.
    pub fn new() -> DeviceResult<Arc<Self>> {
        Self::with_library(options::VULKAN_LIBRARY.value_os().as_deref())
    }

    /// Like [`Instance::new`] but with an explicit loader path (`None`: the system loader).
    pub fn with_library(library: Option<&std::ffi::OsStr>) -> DeviceResult<Arc<Self>> {
        let (entry, library) = load_entry(library)?;

        // SAFETY: `entry` holds a loaded loader; vkEnumerateInstanceVersion takes no pointers
        // of ours besides the output, which ash provides.
        let version = unsafe { entry.try_enumerate_instance_version() }
            .map_err(DeviceError::at("vkEnumerateInstanceVersion"))?
            .map(ApiVersion)
            .unwrap_or(ApiVersion::new(1, 0, 0));
        if !version.at_least(1, 1) {
            return Err(DeviceError::LoaderTooOld {
                version: version.to_string(),
            });
        }

        // SAFETY: as above; `None` asks for the loader's and implicit layers' extensions.
        let extensions = unsafe { entry.enumerate_instance_extension_properties(None) }
            .map_err(DeviceError::at("vkEnumerateInstanceExtensionProperties"))?;
        let has_extension = |name: &CStr| {
            extensions
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(name))
        };
        let portability_enumeration = has_extension(ash::khr::portability_enumeration::NAME);

        let validation = cfg!(debug_assertions) && {
            // SAFETY: as above.
            let layers = unsafe { entry.enumerate_instance_layer_properties() }
                .map_err(DeviceError::at("vkEnumerateInstanceLayerProperties"))?;
            layers
                .iter()
                .any(|l| l.layer_name_as_c_str() == Ok(VALIDATION_LAYER))
        };
        // With validation, route its messages through our messenger (stderr, counted).
        let debug_utils = validation && {
            // SAFETY: as above; the layer name is one the loader just listed.
            let layer_extensions =
                unsafe { entry.enumerate_instance_extension_properties(Some(VALIDATION_LAYER)) }
                    .unwrap_or_default();
            let name = ash::ext::debug_utils::NAME;
            has_extension(name)
                || layer_extensions
                    .iter()
                    .any(|e| e.extension_name_as_c_str() == Ok(name))
        };

        let app_info = vk::ApplicationInfo::default()
            .application_name(c"unimem")
            .engine_name(c"unimem")
            .api_version(REQUIRED_API.0);
        let mut extension_names: Vec<*const c_char> = Vec::new();
        let mut flags = vk::InstanceCreateFlags::empty();
        if portability_enumeration {
            extension_names.push(ash::khr::portability_enumeration::NAME.as_ptr());
            flags |= vk::InstanceCreateFlags::ENUMERATE_PORTABILITY_KHR;
        }
        if debug_utils {
            extension_names.push(ash::ext::debug_utils::NAME.as_ptr());
        }
        let mut messenger_info = validation::create_info();
        let layer_names: Vec<*const c_char> = if validation {
            vec![VALIDATION_LAYER.as_ptr()]
        } else {
            Vec::new()
        };
        let create_info = vk::InstanceCreateInfo::default()
            .flags(flags)
            .application_info(&app_info)
            .enabled_extension_names(&extension_names)
            .enabled_layer_names(&layer_names);
        let create_info = if debug_utils {
            create_info.push_next(&mut messenger_info)
        } else {
            create_info
        };

        // SAFETY: `create_info` and everything it points to (app info, static C strings,
        // the two name vectors) live until the call returns; the names were checked to be
        // offered by the loader above.
        let raw = unsafe { entry.create_instance(&create_info, None) }
            .map_err(DeviceError::at("vkCreateInstance"))?;

        let messenger = if debug_utils {
            // SAFETY: `raw` was just created from `entry` with VK_EXT_debug_utils enabled.
            match unsafe { Messenger::new(&entry, &raw) } {
                Ok(m) => Some(m),
                Err(e) => {
                    // SAFETY: nothing was created from `raw` yet.
                    unsafe { raw.destroy_instance(None) };
                    return Err(e);
                }
            }
        } else {
            None
        };

        Ok(Arc::new(Instance {
            raw,
            messenger,
            entry,
            library,
            loader_version: version,
            validation,
            portability_enumeration,
        }))
    }

    /// Every physical device, in the loader's order, with its report. An empty list is
    /// reported as [`DeviceError::NoDevice`].
    pub fn adapters(self: &Arc<Self>) -> DeviceResult<Vec<Adapter>> {
        // SAFETY: `self.raw` is a live instance.
        let physicals = unsafe { self.raw.enumerate_physical_devices() }
            .map_err(DeviceError::at("vkEnumeratePhysicalDevices"))?;
        if physicals.is_empty() {
            return Err(DeviceError::NoDevice {
                detail: "the loader loaded, but vkEnumeratePhysicalDevices listed no device".into(),
            });
        }
        physicals
            .into_iter()
            .enumerate()
            .map(|(index, physical)| {
                // SAFETY: `physical` was just enumerated from this live instance.
                let report = unsafe { report::collect(&self.raw, physical, index) }?;
                Ok(Adapter {
                    instance: Arc::clone(self),
                    physical,
                    report,
                })
            })
            .collect()
    }

    /// The loader library that was opened (a name or a path).
    pub fn library(&self) -> &str {
        &self.library
    }

    /// The loader's instance-level Vulkan version.
    pub fn loader_version(&self) -> ApiVersion {
        self.loader_version
    }

    /// True when `VK_LAYER_KHRONOS_validation` is enabled (debug builds, layer installed).
    pub fn validation_enabled(&self) -> bool {
        self.validation
    }

    /// True when `VK_KHR_portability_enumeration` is enabled.
    pub fn portability_enumeration(&self) -> bool {
        self.portability_enumeration
    }

    /// The raw instance, for the device layer.
    pub(crate) fn raw(&self) -> &ash::Instance {
        &self.raw
    }

    /// The loader entry points, for the device layer.
    #[allow(dead_code)]
    pub(crate) fn entry(&self) -> &ash::Entry {
        &self.entry
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every child object (devices) holds an `Arc<Instance>`, so when this runs
        // none is alive; the messenger goes first; the entry (loader library) is dropped
        // after this body.
        unsafe {
            if let Some(m) = &self.messenger {
                m.destroy();
            }
            self.raw.destroy_instance(None);
        }
    }
}

/// One physical device of an [`Instance`], with what unimem knows about it.
#[derive(Clone)]
pub struct Adapter {
    pub(crate) instance: Arc<Instance>,
    pub(crate) physical: vk::PhysicalDevice,
    /// Properties, features and limits, as collected at enumeration.
    pub report: DeviceReport,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adapter")
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

/// Opens the loader library: `UNIMEM_VULKAN_LIBRARY`'s path when given, else the system's.
fn load_entry(library: Option<&std::ffi::OsStr>) -> DeviceResult<(ash::Entry, String)> {
    let (result, name) = match library {
        Some(path) => {
            // SAFETY: loading a library runs its initialisers; the user chose this path as
            // their Vulkan loader, which is the contract of UNIMEM_VULKAN_LIBRARY.
            (
                unsafe { ash::Entry::load_from(path) },
                path.to_string_lossy().into_owned(),
            )
        }
        None => {
            // SAFETY: as above, for the system's libvulkan.so.1.
            (unsafe { ash::Entry::load() }, DEFAULT_LIBRARY.to_owned())
        }
    };
    match result {
        Ok(entry) => Ok((entry, name)),
        Err(e) => Err(DeviceError::NoLoader {
            library: name,
            detail: e.to_string(),
        }),
    }
}
