//! Mirror mode (HMM's other half): host memory imported in place with
//! `VK_EXT_external_memory_host`, so a kernel reads and writes the host pages themselves with
//! no copy. Used by advice (read-mostly data, huge inputs) in a later issue; here it is the
//! mechanism: [`Device::import_host`] turns a page-aligned host range into a storage
//! [`Buffer`] whose CPU view is the range itself.
//!
//! Rules checked before any Vulkan call ([`check_import`], plain arithmetic): the extension is
//! enabled; the address and the length are multiples of both the host page size and the
//! device's `minImportedHostPointerAlignment`; the length is not zero.

use ash::vk;

use super::buffer::{Backing, Buffer, Placement};
use super::error::{DeviceError, DeviceResult};
use super::logical::Device;
use super::report::ExternalMemoryHost;

/// The host page size.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as usize
}

/// Checks an import of `len` bytes at `addr` against the device's `VK_EXT_external_memory_host`
/// support (`None`: absent) and the host page size. `Ok(alignment)` is the alignment enforced.
pub fn check_import(
    device: &str,
    support: Option<ExternalMemoryHost>,
    addr: usize,
    len: usize,
    page_size: usize,
) -> DeviceResult<u64> {
    let Some(support) = support else {
        return Err(DeviceError::MissingFeature {
            device: device.to_owned(),
            what: "VK_EXT_external_memory_host (needed for mirror mode: kernels reading host \
                   memory in place); migrate the data instead"
                .into(),
        });
    };
    let align = support
        .min_imported_host_pointer_alignment
        .max(page_size as u64);
    if len == 0 {
        return Err(DeviceError::Usage(
            "cannot import an empty host range".into(),
        ));
    }
    if !(addr as u64).is_multiple_of(align) || !(len as u64).is_multiple_of(align) {
        return Err(DeviceError::Usage(format!(
            "cannot import {len} bytes at {addr:#x} in place: address and length must be \
             multiples of {align} bytes (the host page size and the device's \
             minImportedHostPointerAlignment); align the range"
        )));
    }
    Ok(align)
}

impl Device {
    /// Imports `len` bytes of host memory at `ptr` as a storage buffer, in place: kernels
    /// read and write those pages, and the buffer's CPU view ([`Buffer::as_bytes`]) is the
    /// range itself. Fails with [`DeviceError::MissingFeature`] when the device lacks
    /// `VK_EXT_external_memory_host`, with [`DeviceError::Usage`] when the range is not
    /// aligned (see [`check_import`]).
    ///
    /// # Safety
    /// The range is mapped read-write host memory (private or shared anonymous memory, not
    /// a file mapping or device memory) that stays mapped, and is not unmapped or remapped,
    /// until the returned buffer is dropped. While a kernel runs on the buffer the CPU does
    /// not access the range.
    pub unsafe fn import_host(&self, ptr: *mut u8, len: usize) -> DeviceResult<Buffer> {
        let report = self.report();
        let support = if self.external_memory_host_enabled() {
            report.external_memory_host
        } else {
            None
        };
        check_import(&report.name, support, ptr as usize, len, page_size())?;
        let shared = &self.shared;
        let ext = ash::ext::external_memory_host::Device::new(self.instance().raw(), &shared.raw);
        let mut props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: the extension is enabled on this device (so the function pointer is loaded);
        // `ptr` is an aligned host pointer; `props` is a valid output structure.
        let result = unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                shared.raw.handle(),
                vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
                ptr.cast_const().cast(),
                &mut props,
            )
        };
        result.result().map_err(|e| match e {
            vk::Result::ERROR_INVALID_EXTERNAL_HANDLE => DeviceError::Usage(format!(
                "the device cannot import host memory at {ptr:?}: it is not ordinary anonymous \
                 host memory"
            )),
            e => DeviceError::from_vk("vkGetMemoryHostPointerPropertiesEXT", e),
        })?;
        let placement = Placement {
            required: vk::MemoryPropertyFlags::empty(),
            preferred: vk::MemoryPropertyFlags::HOST_CACHED,
            mapped: false,
            zeroed: false,
            purpose: "imported host memory",
        };
        let backing = Backing::ImportHost {
            ptr: std::ptr::NonNull::new(ptr).ok_or_else(|| {
                DeviceError::Usage("cannot import host memory at a null address".into())
            })?,
            type_bits: props.memory_type_bits,
        };
        // SAFETY: the range is aligned (checked) and stays mapped while the buffer lives
        // (caller's contract); not zeroed.
        unsafe { Buffer::create(shared, len as u64, placement, backing) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT: Option<ExternalMemoryHost> = Some(ExternalMemoryHost {
        min_imported_host_pointer_alignment: 4096,
    });

    #[test]
    fn missing_extension_says_what_to_do() {
        let err = check_import("dev", None, 0x10000, 4096, 4096).unwrap_err();
        assert!(matches!(err, DeviceError::MissingFeature { .. }));
        let msg = err.to_string();
        assert!(msg.contains("VK_EXT_external_memory_host"), "{msg}");
        assert!(msg.contains("mirror mode"), "{msg}");
    }

    #[test]
    fn alignment_is_the_larger_of_page_and_device() {
        assert_eq!(check_import("d", EXT, 0x10000, 8192, 4096).unwrap(), 4096);
        let big = Some(ExternalMemoryHost {
            min_imported_host_pointer_alignment: 65536,
        });
        assert_eq!(check_import("d", big, 0x10000, 65536, 4096).unwrap(), 65536);
        let err = check_import("d", big, 0x11000, 65536, 4096).unwrap_err();
        assert!(err.to_string().contains("multiples of 65536"), "{err}");
        assert!(check_import("d", EXT, 0x10000, 100, 4096).is_err());
        assert!(check_import("d", EXT, 0x10000, 0, 4096).is_err());
        assert_eq!(
            check_import("d", EXT, 0x10000, 16384, 16384).unwrap(),
            16384
        );
    }
}
