//! `DeviceError`: every way the device layer can fail, and what the user should do about it.
//!
//! Owns the mapping from loader failures and `VkResult` codes to errors. Each Vulkan call site
//! passes its name (`vkCreateBuffer`) so a message always says *which* call failed; the
//! documented error codes of interest (out of memory, device lost, incompatible driver) become
//! dedicated variants so callers can react to them without matching raw `vk::Result`s.
//!
//! Rule for messages: what happened, where, and what to do.

use ash::vk;

/// The Debian/Ubuntu packages that provide a Vulkan loader and a CPU Vulkan device (lavapipe).
pub const INSTALL_HINT: &str =
    "install a Vulkan loader and driver: on Debian/Ubuntu `apt-get install libvulkan1 mesa-vulkan-drivers` \
     (mesa-vulkan-drivers includes lavapipe, a Vulkan device that runs on the CPU)";

/// Errors of the device layer.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The Vulkan loader library could not be loaded.
    #[error(
        "cannot load the Vulkan loader `{library}`: {detail}. To fix: {INSTALL_HINT}; \
         or set UNIMEM_VULKAN_LIBRARY to the path of libvulkan.so.1"
    )]
    NoLoader {
        /// The library name or path that was tried.
        library: String,
        /// The dynamic linker's message.
        detail: String,
    },

    /// The loader works but is older than Vulkan 1.1 (unimem needs `vkGetPhysicalDeviceFeatures2`).
    #[error(
        "the Vulkan loader only supports Vulkan {version}; unimem needs 1.2 or newer. \
         To fix: upgrade the loader (`apt-get install libvulkan1`)"
    )]
    LoaderTooOld {
        /// The loader's instance version, `major.minor.patch`.
        version: String,
    },

    /// The loader found no Vulkan device (no driver installed, or the ICD list is empty/wrong).
    #[error(
        "no Vulkan device found ({detail}). To fix: {INSTALL_HINT}; check that VK_ICD_FILENAMES / \
         VK_DRIVER_FILES, if set, name existing driver manifests; `vulkaninfo --summary` lists the devices"
    )]
    NoDevice {
        /// What the loader said.
        detail: String,
    },

    /// Devices exist but none meets the requirements (see `device::select::REQUIREMENTS`).
    #[error("no usable Vulkan device: {devices}. To fix: update the driver or {INSTALL_HINT}")]
    NoSuitableDevice {
        /// One line per device naming what it lacks.
        devices: String,
    },

    /// `UNIMEM_DEVICE` names no device.
    #[error(
        "UNIMEM_DEVICE={requested:?} matches no Vulkan device; the devices are: {devices}. \
         To fix: set UNIMEM_DEVICE to one of these indices or to part of a name, or unset it"
    )]
    UnknownDevice {
        /// The value of `UNIMEM_DEVICE`.
        requested: String,
        /// `index: name` of every device.
        devices: String,
    },

    /// `UNIMEM_DEVICE` names several devices.
    #[error(
        "UNIMEM_DEVICE={requested:?} matches several Vulkan devices: {devices}. \
         To fix: set UNIMEM_DEVICE to the index of one of them"
    )]
    AmbiguousDevice {
        /// The value of `UNIMEM_DEVICE`.
        requested: String,
        /// `index: name` of every matching device.
        devices: String,
    },

    /// The chosen device lacks a feature unimem needs.
    #[error(
        "Vulkan device {device:?} lacks {what}. To fix: choose another device with UNIMEM_DEVICE, \
         or update the driver"
    )]
    MissingFeature {
        /// The device name.
        device: String,
        /// The missing features, with what each is needed for.
        what: String,
    },

    /// The device ran out of memory in `call`.
    #[error(
        "out of device memory in {call}. To fix: free buffers you no longer need or use smaller ones"
    )]
    OutOfDeviceMemory {
        /// The Vulkan call that failed.
        call: &'static str,
    },

    /// The driver ran out of host memory in `call`.
    #[error("out of host memory in {call} (the driver could not allocate). To fix: free memory")]
    OutOfHostMemory {
        /// The Vulkan call that failed.
        call: &'static str,
    },

    /// The device was lost (driver crash, hung kernel, reset). The `Device` is unusable.
    #[error(
        "the Vulkan device was lost during {call} (the driver crashed or a kernel hung or faulted). \
         To fix: drop this Device and open a new one; if it repeats, run the kernel with \
         smaller inputs or under the validation layer (`apt-get install vulkan-validationlayers`)"
    )]
    DeviceLost {
        /// The Vulkan call that reported the loss.
        call: &'static str,
    },

    /// Work submitted to the device did not finish in time.
    #[error(
        "{what} did not finish within {millis} ms; the device is now unusable (its objects are \
         leaked, since the work may still be running). To fix: check the kernel for an endless \
         loop, or raise the timeout with Device::set_timeout"
    )]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The timeout that expired, in milliseconds.
        millis: u64,
    },

    /// A shader could not be turned into a pipeline.
    #[error("kernel rejected: {0}")]
    Shader(String),

    /// The caller used the API wrongly (wrong sizes, wrong device, too many groups...).
    #[error("invalid use of the device layer: {0}")]
    Usage(String),

    /// An `UNIMEM_*` option has a bad value (the message names the variable, its value and
    /// what it accepts).
    #[error("{0}")]
    Config(String),

    /// Any other failing Vulkan call.
    #[error(
        "{call} failed with VK_{result:?} ({result}). This is a driver-level failure; to see why, install the \
         validation layer (`apt-get install vulkan-validationlayers`) and rerun a debug build"
    )]
    Vk {
        /// The Vulkan call that failed.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
}

impl DeviceError {
    /// Maps the `VkResult` of `call` to an error. The documented results with a meaning of
    /// their own get their own variant; everything else becomes [`DeviceError::Vk`].
    pub fn from_vk(call: &'static str, result: vk::Result) -> Self {
        match result {
            vk::Result::ERROR_OUT_OF_DEVICE_MEMORY => Self::OutOfDeviceMemory { call },
            vk::Result::ERROR_OUT_OF_HOST_MEMORY => Self::OutOfHostMemory { call },
            vk::Result::ERROR_DEVICE_LOST => Self::DeviceLost { call },
            // vkCreateInstance: the loader found no driver manifest it could use.
            vk::Result::ERROR_INCOMPATIBLE_DRIVER => Self::NoDevice {
                detail: format!("{call} returned VK_{result:?}: the loader found no usable driver"),
            },
            _ => Self::Vk { call, result },
        }
    }

    /// A closure for `map_err` at a call site: `.map_err(DeviceError::at("vkCreateBuffer"))`.
    pub fn at(call: &'static str) -> impl Fn(vk::Result) -> Self {
        move |result| Self::from_vk(call, result)
    }

    /// True when the error means "this machine has no usable Vulkan device" (no loader, no
    /// driver, no device meeting the requirements), as opposed to a failure of a device that
    /// exists. Tests may skip on these (see `device::test_support`); nothing else may be skipped.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NoLoader { .. }
                | Self::LoaderTooOld { .. }
                | Self::NoDevice { .. }
                | Self::NoSuitableDevice { .. }
                | Self::MissingFeature { .. }
        )
    }
}

/// Result alias of the device layer.
pub type DeviceResult<T> = Result<T, DeviceError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_results_get_their_own_variant() {
        assert!(matches!(
            DeviceError::from_vk("vkAllocateMemory", vk::Result::ERROR_OUT_OF_DEVICE_MEMORY),
            DeviceError::OutOfDeviceMemory {
                call: "vkAllocateMemory"
            }
        ));
        assert!(matches!(
            DeviceError::from_vk("vkQueueSubmit", vk::Result::ERROR_DEVICE_LOST),
            DeviceError::DeviceLost { .. }
        ));
        assert!(
            DeviceError::from_vk("vkCreateInstance", vk::Result::ERROR_INCOMPATIBLE_DRIVER)
                .is_unavailable()
        );
        let other = DeviceError::from_vk("vkCreateBuffer", vk::Result::ERROR_UNKNOWN);
        assert!(!other.is_unavailable());
        assert!(other.to_string().contains("vkCreateBuffer"));
    }

    #[test]
    fn no_loader_message_says_how_to_fix() {
        let e = DeviceError::NoLoader {
            library: "libvulkan.so.1".into(),
            detail: "not found".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("libvulkan.so.1"));
        assert!(msg.contains("mesa-vulkan-drivers") && msg.contains("libvulkan1"));
        assert!(msg.contains("UNIMEM_VULKAN_LIBRARY"));
    }
}
