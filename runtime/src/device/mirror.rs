//! Mirror mode (HMM's other half): host memory imported in place with
//! `VK_EXT_external_memory_host`, so a kernel reads and writes the host pages themselves with
//! no copy. [`Device::import_host`] turns a page-aligned host range into a storage [`Buffer`]
//! whose CPU view is the range itself; [`Windows`] imports the managed heap that way, in
//! windows no larger than a storage-buffer binding, for in-place mode (docs/ARCHITECTURE.md).
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

/// The committed part of the managed heap, imported in place: window `k` covers
/// `[base + k * window_bytes, ...)`, up to `window_bytes` (a power of two no larger than the
/// device's storage-buffer range, a multiple of the block size). A kernel reaches the word at
/// offset `off` of the heap as word `(off % window_bytes) / 4` of window `off / window_bytes`.
///
/// Each window is imported twice, as two buffers over the same pages: kernels see one as
/// 32-bit words and the other as 64-bit words, so that a 64-bit load is one gather instead of
/// two (the extension lets a host range be imported more than once; both buffers only alias
/// memory, nothing is copied).
///
/// Invariant: every window but the last is whole; the last covers the heap up to the
/// committed end it was imported at. The allocator never decommits, so imported pages stay
/// mapped read-write for the life of the process (purged pages read as zero).
pub struct Windows {
    base: usize,
    window_bytes: u64,
    /// Window `k`'s two views, 32-bit and 64-bit (the same pages).
    buffers: Vec<[Buffer; 2]>,
    /// Bytes from `base` the buffers cover.
    covered: usize,
    /// Bytes from `base` covered by windows whose device address is their host address, all
    /// of them from the first on (`<= covered`): what kernels may reach by host address.
    addressed: usize,
    /// Small buffers bound where a pipeline declares more windows than exist (its count is
    /// rounded up to a power of two) and in the unused atomic-log slot before the windows.
    /// Kernels read them only speculatively and discard what they read.
    spares: Vec<Buffer>,
}

impl Windows {
    /// No windows yet, over the heap at `base`, in windows of `window_bytes`.
    pub fn new(base: usize, window_bytes: u64) -> Windows {
        assert!(window_bytes.is_power_of_two(), "window of {window_bytes} bytes");
        Windows { base, window_bytes, buffers: Vec::new(), covered: 0, addressed: 0, spares: Vec::new() }
    }

    /// Bytes per window.
    pub fn window_bytes(&self) -> u64 {
        self.window_bytes
    }

    /// Bytes from the heap's start that the windows cover.
    pub fn covered(&self) -> usize {
        self.covered
    }

    /// Bytes from the heap's start that windows cover whose device addresses equal their
    /// host addresses, every window from the first on (lavapipe's always do): a kernel may
    /// use a host pointer below `base + addressed()` as a device address.
    pub fn addressed(&self) -> usize {
        self.addressed
    }

    /// What a dispatch binds after the argument buffers: `alog` (or a spare when the kernel
    /// has no atomic log), then the 32-bit views of `bound` windows, then their 64-bit views;
    /// spares stand in for windows that do not exist yet.
    pub fn for_dispatch<'a>(&'a mut self, device: &Device, bound: usize, alog: Option<&'a mut Buffer>) -> DeviceResult<Vec<&'a mut Buffer>> {
        let real = bound.min(self.buffers.len());
        let spares = 2 * (bound - real) + usize::from(alog.is_none());
        while self.spares.len() < spares {
            self.spares.push(device.create_host_buffer(4096)?);
        }
        let mut spare = self.spares.iter_mut();
        let mut out = Vec::with_capacity(2 * bound + 1);
        out.push(match alog {
            Some(a) => a,
            None => spare.next().expect("spare for the atomic-log slot"),
        });
        let mut wide = Vec::with_capacity(real);
        for [n, w] in self.buffers.iter_mut().take(real) {
            out.push(n);
            wide.push(w);
        }
        out.extend(spare.by_ref().take(bound - real));
        out.extend(wide);
        out.extend(spare.take(bound - real));
        Ok(out)
    }

    /// Imports the heap up to `committed` bytes from its start (a multiple of the page size):
    /// the last window is imported again, larger, and new windows follow. Does nothing when
    /// `committed` is already covered. On error the windows imported so far stay valid.
    ///
    /// # Safety
    /// `[base, base + committed)` is mapped read-write anonymous memory that stays mapped for
    /// as long as these windows live, and no kernel using the windows is running.
    pub unsafe fn ensure(&mut self, device: &Device, committed: usize) -> DeviceResult<()> {
        let w = self.window_bytes as usize;
        while self.covered < committed {
            let k = self.covered / w;
            let start = k * w;
            let len = (committed - start).min(w);
            let at = (self.base + start) as *mut u8;
            // SAFETY: inside the committed heap (caller's contract), which outlives the buffers.
            let views = unsafe { [device.import_host(at, len)?, device.import_host(at, len)?] };
            if self.addressed >= start {
                let same = views.iter().all(|v| v.device_address() == at as u64);
                self.addressed = if same { start + len } else { start };
            }
            if k < self.buffers.len() {
                self.buffers[k] = views;
            } else {
                self.buffers.push(views);
            }
            self.covered = start + len;
        }
        Ok(())
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
