//! Validation-layer messages: routed to stderr with a prefix, and counted.
//!
//! When `VK_LAYER_KHRONOS_validation` is enabled (debug builds, layer installed), the
//! instance also enables `VK_EXT_debug_utils` and installs one messenger whose callback
//! prints warnings and errors to stderr (never stdout: `unimem info` output stays clean)
//! and counts errors. Tests call [`validation_errors`] to prove they ran without invalid
//! Vulkan usage. The counters are process-wide, like the layer itself.

use std::ffi::{c_void, CStr};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use ash::vk;

use super::error::{DeviceError, DeviceResult};

/// Errors reported by the validation layer in this process (`Relaxed`: a statistic).
static ERRORS: AtomicU64 = AtomicU64::new(0);
/// Warnings reported by the validation layer in this process (`Relaxed`: a statistic).
static WARNINGS: AtomicU64 = AtomicU64::new(0);

/// How many validation errors this process has seen (0 when validation is off).
pub fn validation_errors() -> u64 {
    ERRORS.load(Ordering::Relaxed)
}

/// How many validation warnings this process has seen (0 when validation is off).
pub fn validation_warnings() -> u64 {
    WARNINGS.load(Ordering::Relaxed)
}

/// The messenger settings, also chained into `VkInstanceCreateInfo` so instance creation
/// and destruction are covered.
pub(crate) fn create_info() -> vk::DebugUtilsMessengerCreateInfoEXT<'static> {
    vk::DebugUtilsMessengerCreateInfoEXT::default()
        .message_severity(
            vk::DebugUtilsMessageSeverityFlagsEXT::WARNING
                | vk::DebugUtilsMessageSeverityFlagsEXT::ERROR,
        )
        .message_type(
            vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
        )
        .pfn_user_callback(Some(callback))
}

unsafe extern "system" fn callback(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _user: *mut c_void,
) -> vk::Bool32 {
    let level = if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        ERRORS.fetch_add(1, Ordering::Relaxed);
        "error"
    } else {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
        "warning"
    };
    // SAFETY: the layer passes a valid callback-data struct (or null) for the duration of
    // the call; its message, when present, is a NUL-terminated string.
    let message = unsafe { data.as_ref().and_then(|d| d.message_as_c_str()) }
        .map(CStr::to_string_lossy)
        .unwrap_or_default();
    // Never panic across the FFI boundary: ignore a failing stderr.
    let _ = writeln!(
        std::io::stderr(),
        "unimem: Vulkan validation {level} ({types:?}): {message}"
    );
    vk::FALSE // do not abort the call that triggered the message
}

/// An installed messenger; destroyed by its `Instance` before the instance itself.
pub(crate) struct Messenger {
    loader: ash::ext::debug_utils::Instance,
    raw: vk::DebugUtilsMessengerEXT,
}

impl Messenger {
    /// Installs the messenger.
    ///
    /// # Safety
    /// `instance` is live and was created from `entry` with `VK_EXT_debug_utils` enabled.
    pub(crate) unsafe fn new(entry: &ash::Entry, instance: &ash::Instance) -> DeviceResult<Self> {
        let loader = ash::ext::debug_utils::Instance::new(entry, instance);
        // SAFETY: the extension is enabled (caller's contract); the callback is a plain
        // function valid for the life of the process.
        let raw = unsafe { loader.create_debug_utils_messenger(&create_info(), None) }
            .map_err(DeviceError::at("vkCreateDebugUtilsMessengerEXT"))?;
        Ok(Messenger { loader, raw })
    }

    /// Removes the messenger.
    ///
    /// # Safety
    /// Called once, before the instance is destroyed.
    pub(crate) unsafe fn destroy(&self) {
        // SAFETY: caller's contract.
        unsafe { self.loader.destroy_debug_utils_messenger(self.raw, None) };
    }
}
