//! `Buffer`: a storage buffer and its device memory, and the choice of memory type (plain
//! flag arithmetic, unit-tested without Vulkan).
//!
//! Buffers handed out by `Device::create_host_buffer` live in host-visible, coherent memory,
//! mapped for their whole life. The migration engine also creates, crate-internally, buffers
//! that are not mapped (staging-mode frames in device-local memory) and buffers over imported
//! host memory (mirror mode, `mirror.rs`), through [`Buffer::create`].
//!
//! Every buffer is created with `STORAGE_BUFFER | TRANSFER_SRC | TRANSFER_DST |
//! SHADER_DEVICE_ADDRESS` usage and its memory with `DEVICE_ADDRESS`, so later layers (frame
//! pool, device page table, fault buffer) can hand its 64-bit address to kernels.
//!
//! Invariants:
//! - `mapped`, when present, points at `size` bytes that stay valid until `Drop` frees the
//!   memory (for imported memory: the caller's host range, which outlives the buffer); the
//!   bytes are initialised (zeroed at creation, or the caller's own bytes);
//! - CPU access goes through `&self`/`&mut self` methods, and `Device::dispatch` borrows
//!   the buffer mutably, so no CPU reference into the memory coexists with a kernel;
//! - only crate-internal buffers are unmapped; `as_bytes` on one is a bug and panics.

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;

use super::error::{DeviceError, DeviceResult};
use super::logical::DeviceShared;
use super::report::MemoryTypeInfo;
use super::select::HOST_MAPPABLE;

/// Memory flags that make a type a bad choice unless explicitly required.
const AVOIDED: vk::MemoryPropertyFlags = vk::MemoryPropertyFlags::from_raw(
    vk::MemoryPropertyFlags::PROTECTED.as_raw()
        | vk::MemoryPropertyFlags::LAZILY_ALLOCATED.as_raw()
        | vk::MemoryPropertyFlags::DEVICE_COHERENT_AMD.as_raw()
        | vk::MemoryPropertyFlags::DEVICE_UNCACHED_AMD.as_raw(),
);

/// Picks a memory type index: allowed by `type_bits` (from `VkMemoryRequirements`), having
/// every flag of `required`; among those, the one with the most `preferred` flags and the
/// fewest avoided flags (protected, lazily allocated, AMD uncached/coherent) that were not
/// required; ties go to the lowest index. `None` when no type qualifies.
pub fn find_memory_type(
    types: &[MemoryTypeInfo],
    type_bits: u32,
    required: vk::MemoryPropertyFlags,
    preferred: vk::MemoryPropertyFlags,
) -> Option<u32> {
    types
        .iter()
        .enumerate()
        .take(32)
        .filter(|(i, t)| type_bits & (1 << i) != 0 && t.flags.contains(required))
        .max_by_key(|(i, t)| {
            let preferred_hits = (t.flags & preferred).as_raw().count_ones() as i64;
            let avoided_hits = (t.flags & AVOIDED & !required).as_raw().count_ones() as i64;
            // Lexicographic: avoided flags weigh more than preferred ones; lower index wins ties.
            (-avoided_hits, preferred_hits, -(*i as i64))
        })
        .map(|(i, _)| i as u32)
}

/// Which memory a buffer gets and whether the CPU maps it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    /// Flags the memory type must have.
    pub required: vk::MemoryPropertyFlags,
    /// Flags that make a type better.
    pub preferred: vk::MemoryPropertyFlags,
    /// Map the memory for the buffer's life (`required` must include `HOST_MAPPABLE`).
    pub mapped: bool,
    /// Zero the bytes at creation (only for mapped buffers).
    pub zeroed: bool,
    /// What a missing memory type is needed for, for the error message.
    pub purpose: &'static str,
}

/// What `Device::create_host_buffer` makes.
pub(crate) const HOST_BUFFER: Placement = Placement {
    required: HOST_MAPPABLE,
    preferred: vk::MemoryPropertyFlags::HOST_CACHED,
    mapped: true,
    zeroed: true,
    purpose: "storage buffers",
};

/// Where a buffer's memory comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Backing {
    /// `vkAllocateMemory` of a fresh allocation.
    Allocate,
    /// Import of `size` bytes of host memory at `ptr` (`VK_EXT_external_memory_host`);
    /// `type_bits` from `vkGetMemoryHostPointerPropertiesEXT`.
    ImportHost { ptr: NonNull<u8>, type_bits: u32 },
}

/// The mapped pointer of a `Buffer`. Only this field is made `Send + Sync`, not the struct.
#[derive(Clone, Copy)]
struct MappedPtr(NonNull<u8>);

// SAFETY: the pointer addresses device memory mapped into this process (or imported host
// memory), valid from any thread; `Buffer`'s methods give `&[u8]` only through `&self` and
// `&mut [u8]` only through `&mut self`, so Rust's borrow rules already serialise access
// across threads.
unsafe impl Send for MappedPtr {}
// SAFETY: as above: shared access is read-only through `&self`.
unsafe impl Sync for MappedPtr {}

/// A storage buffer the CPU and kernels share: host-visible, coherent, persistently mapped
/// (crate-internal buffers may be unmapped; see the module docs).
pub struct Buffer {
    pub(crate) shared: Arc<DeviceShared>,
    raw: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    memory_type: u32,
    address: vk::DeviceAddress,
    mapped: Option<MappedPtr>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("size", &self.size)
            .field("memory_type", &self.memory_type)
            .field("device_address", &format_args!("{:#x}", self.address))
            .field("mapped", &self.mapped.is_some())
            .finish_non_exhaustive()
    }
}

impl Buffer {
    /// Creates a zero-filled host-visible, coherent, mapped storage buffer of `size` bytes.
    pub(crate) fn new_host(shared: &Arc<DeviceShared>, size: u64) -> DeviceResult<Buffer> {
        // SAFETY: `Backing::Allocate` has no caller obligations.
        unsafe { Buffer::create(shared, size, HOST_BUFFER, Backing::Allocate) }
    }

    /// Creates a storage buffer of `size` bytes placed as `placement` says, over memory from
    /// `backing`.
    ///
    /// # Safety
    /// For `Backing::ImportHost`: `ptr` addresses `size` bytes of host memory, aligned to
    /// `minImportedHostPointerAlignment` (as is `size`), that stay allocated and mapped until
    /// the buffer is dropped, and `placement.zeroed` is false.
    pub(crate) unsafe fn create(
        shared: &Arc<DeviceShared>,
        size: u64,
        placement: Placement,
        backing: Backing,
    ) -> DeviceResult<Buffer> {
        let report = &shared.report;
        if size == 0 {
            return Err(DeviceError::Usage(
                "a buffer cannot be empty (size 0)".into(),
            ));
        }
        let max = report.max_memory_allocation_size;
        if max != 0 && size > max {
            return Err(DeviceError::Usage(format!(
                "a buffer of {size} bytes exceeds the device's maxMemoryAllocationSize of {max} \
                 bytes; split it into several buffers"
            )));
        }
        let len = usize::try_from(size).map_err(|_| {
            DeviceError::Usage(format!(
                "a buffer of {size} bytes cannot be mapped on this host"
            ))
        })?;
        debug_assert!(!placement.mapped || placement.required.contains(HOST_MAPPABLE));
        let import = match backing {
            Backing::Allocate => None,
            Backing::ImportHost { ptr, type_bits } => Some((ptr, type_bits)),
        };
        let raw_device = &shared.raw;

        let mut external = vk::ExternalMemoryBufferCreateInfo::default()
            .handle_types(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT);
        let mut info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::UNIFORM_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST
                    | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        if import.is_some() {
            info = info.push_next(&mut external);
        }
        // SAFETY: `raw_device` is live; `info` is valid (size > 0, bufferDeviceAddress
        // enabled; the external-memory struct only with VK_EXT_external_memory_host enabled,
        // which the caller of an import checked).
        let raw = unsafe { raw_device.create_buffer(&info, None) }
            .map_err(DeviceError::at("vkCreateBuffer"))?;

        // Everything below must destroy `raw` (and the memory, once allocated) on failure.
        let destroy = |memory: Option<vk::DeviceMemory>| {
            // SAFETY: the buffer and memory were created here and are not used by any work.
            unsafe {
                raw_device.destroy_buffer(raw, None);
                if let Some(m) = memory {
                    raw_device.free_memory(m, None);
                }
            }
        };

        // SAFETY: `raw` is a live buffer of this device.
        let requirements = unsafe { raw_device.get_buffer_memory_requirements(raw) };
        let type_bits = requirements.memory_type_bits & import.map_or(!0, |(_, bits)| bits);
        let Some(memory_type) = find_memory_type(
            &report.memory_types,
            type_bits,
            placement.required,
            placement.preferred,
        ) else {
            destroy(None);
            return Err(DeviceError::MissingFeature {
                device: report.name.clone(),
                what: format!(
                    "a memory type with {:?} usable for {}",
                    placement.required, placement.purpose
                ),
            });
        };

        let mut flags =
            vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
        let mut import_info = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT);
        let mut alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(requirements.size)
            .memory_type_index(memory_type)
            .push_next(&mut flags);
        if let Some((ptr, _)) = import {
            if requirements.size > size {
                destroy(None);
                return Err(DeviceError::Usage(format!(
                    "the device needs {} bytes of memory for a buffer of {size} bytes, more than \
                     the imported range; import a larger range",
                    requirements.size
                )));
            }
            import_info = import_info.host_pointer(ptr.as_ptr().cast::<c_void>());
            alloc = alloc.allocation_size(size).push_next(&mut import_info);
        }
        // SAFETY: `alloc` names a memory type of this device; bufferDeviceAddress is enabled;
        // an import's pointer and size meet the caller's contract.
        let memory = match unsafe { raw_device.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(e) => {
                destroy(None);
                return Err(DeviceError::from_vk("vkAllocateMemory", e));
            }
        };
        // SAFETY: `memory` is unbound, large enough (size from the requirements), of an
        // allowed type, and offset 0 satisfies any alignment.
        if let Err(e) = unsafe { raw_device.bind_buffer_memory(raw, memory, 0) } {
            destroy(Some(memory));
            return Err(DeviceError::from_vk("vkBindBufferMemory", e));
        }
        let mapped = match import {
            Some((ptr, _)) => Some(ptr),
            None if placement.mapped => {
                // SAFETY: `memory` is host-visible and not mapped yet; the range is within it.
                let ptr = match unsafe {
                    raw_device.map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                } {
                    Ok(p) => p,
                    Err(e) => {
                        destroy(Some(memory));
                        return Err(DeviceError::from_vk("vkMapMemory", e));
                    }
                };
                let Some(mapped) = NonNull::new(ptr.cast::<u8>()) else {
                    destroy(Some(memory));
                    return Err(DeviceError::Vk {
                        call: "vkMapMemory",
                        result: vk::Result::ERROR_MEMORY_MAP_FAILED,
                    });
                };
                if placement.zeroed {
                    // SAFETY: `mapped` addresses at least `requirements.size >= size`
                    // writable bytes that nothing else references yet.
                    unsafe { std::ptr::write_bytes(mapped.as_ptr(), 0, len) };
                }
                Some(mapped)
            }
            None => None,
        };

        let address_info = vk::BufferDeviceAddressInfo::default().buffer(raw);
        // SAFETY: `raw` was created with SHADER_DEVICE_ADDRESS and is bound to memory
        // allocated with DEVICE_ADDRESS.
        let address = unsafe { raw_device.get_buffer_device_address(&address_info) };

        Ok(Buffer {
            shared: Arc::clone(shared),
            raw,
            memory,
            size,
            memory_type,
            address,
            mapped: mapped.map(MappedPtr),
        })
    }

    /// The size in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Always false (buffers are never empty); present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The memory type index the buffer's memory came from.
    pub fn memory_type_index(&self) -> u32 {
        self.memory_type
    }

    /// The buffer's 64-bit device address (`vkGetBufferDeviceAddress`).
    pub fn device_address(&self) -> u64 {
        self.address
    }

    /// True when the CPU can read the buffer (always, for buffers handed out publicly).
    pub fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// The start of the CPU mapping, if any (for the device layer's raw copies).
    pub(crate) fn mapped_ptr(&self) -> Option<NonNull<u8>> {
        self.mapped.map(|m| m.0)
    }

    fn mapping(&self) -> NonNull<u8> {
        match self.mapped {
            Some(m) => m.0,
            None => panic!(
                "a {}-byte device-local buffer is not mapped; this is a bug in the device layer",
                self.size
            ),
        }
    }

    /// The buffer's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: module invariants: the mapping holds `size` initialised bytes that live as
        // long as `self`; `&self` excludes kernels and CPU writers (they need `&mut`).
        unsafe { std::slice::from_raw_parts(self.mapping().as_ptr(), self.size as usize) }
    }

    /// The buffer's bytes, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.mapping().as_ptr(), self.size as usize) }
    }

    /// The buffer as `[T]`; trailing bytes that do not fill a whole `T` are left out.
    ///
    /// # Panics
    /// If `T`'s alignment exceeds the mapping's (`minMemoryMapAlignment`, at least 64 bytes).
    pub fn as_slice<T: bytemuck::Pod>(&self) -> &[T] {
        let bytes = self.as_bytes();
        let whole = bytes.len() - bytes.len() % std::mem::size_of::<T>().max(1);
        bytemuck::cast_slice(&bytes[..whole])
    }

    /// The buffer as `[T]`, writable; trailing bytes that do not fill a whole `T` are left out.
    ///
    /// # Panics
    /// If `T`'s alignment exceeds the mapping's (`minMemoryMapAlignment`, at least 64 bytes).
    pub fn as_mut_slice<T: bytemuck::Pod>(&mut self) -> &mut [T] {
        let bytes = self.as_bytes_mut();
        let whole = bytes.len() - bytes.len() % std::mem::size_of::<T>().max(1);
        bytemuck::cast_slice_mut(&mut bytes[..whole])
    }

    /// The raw handle, for the device layer.
    pub(crate) fn raw(&self) -> vk::Buffer {
        self.raw
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.shared.is_poisoned() {
            // Work that uses this buffer may still be running: leak it.
            return;
        }
        // SAFETY: dispatches borrow the buffer and wait for completion, so no pending work
        // uses it; freeing the memory also unmaps it; the device outlives us (Arc).
        unsafe {
            self.shared.raw.destroy_buffer(self.raw, None);
            self.shared.raw.free_memory(self.memory, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    type F = vk::MemoryPropertyFlags;

    fn t(flags: F) -> MemoryTypeInfo {
        MemoryTypeInfo { flags, heap: 0 }
    }

    #[test]
    fn lavapipe_single_type() {
        let types = [t(F::DEVICE_LOCAL
            | F::HOST_VISIBLE
            | F::HOST_COHERENT
            | F::HOST_CACHED)];
        assert_eq!(
            find_memory_type(&types, 1, HOST_MAPPABLE, F::HOST_CACHED),
            Some(0)
        );
        assert_eq!(find_memory_type(&types, 0, HOST_MAPPABLE, F::empty()), None);
    }

    #[test]
    fn discrete_gpu_layout() {
        let types = [
            t(F::DEVICE_LOCAL),
            t(F::HOST_VISIBLE | F::HOST_COHERENT),
            t(F::HOST_VISIBLE | F::HOST_COHERENT | F::HOST_CACHED),
            t(F::DEVICE_LOCAL | F::HOST_VISIBLE | F::HOST_COHERENT),
        ];
        let all = 0b1111;
        assert_eq!(
            find_memory_type(&types, all, HOST_MAPPABLE, F::HOST_CACHED),
            Some(2)
        );
        assert_eq!(
            find_memory_type(&types, all, HOST_MAPPABLE, F::DEVICE_LOCAL),
            Some(3)
        );
        assert_eq!(
            find_memory_type(&types, all, HOST_MAPPABLE, F::empty()),
            Some(1)
        );
        assert_eq!(
            find_memory_type(&types, 0b0010, HOST_MAPPABLE, F::HOST_CACHED),
            Some(1)
        );
        assert_eq!(
            find_memory_type(&types, all, F::DEVICE_LOCAL, F::empty()),
            Some(0)
        );
        assert_eq!(
            find_memory_type(&types, 0b0001, HOST_MAPPABLE, F::empty()),
            None
        );
    }

    #[test]
    fn avoided_flags_lose_unless_required() {
        let types = [
            t(F::HOST_VISIBLE | F::HOST_COHERENT | F::HOST_CACHED | F::DEVICE_UNCACHED_AMD),
            t(F::HOST_VISIBLE | F::HOST_COHERENT),
        ];
        assert_eq!(
            find_memory_type(&types, 0b11, HOST_MAPPABLE, F::HOST_CACHED),
            Some(1)
        );
        let required = HOST_MAPPABLE | F::DEVICE_UNCACHED_AMD;
        assert_eq!(
            find_memory_type(&types, 0b11, required, F::empty()),
            Some(0)
        );
    }
}
