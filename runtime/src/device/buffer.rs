//! `Buffer`: a storage buffer in host-visible, coherent memory, mapped for its whole life,
//! and the choice of memory type (plain flag arithmetic, unit-tested without Vulkan).
//!
//! Every buffer is created with `STORAGE_BUFFER | TRANSFER_SRC | TRANSFER_DST |
//! SHADER_DEVICE_ADDRESS` usage and its memory with `DEVICE_ADDRESS`, so later layers (frame
//! pool, device page table, fault buffer) can hand its 64-bit address to kernels.
//!
//! Invariants:
//! - `mapped` points at `size` bytes of the allocation's persistent mapping, which stays
//!   valid until `Drop` frees the memory; the bytes are initialised (zeroed at creation);
//! - CPU access goes through `&self`/`&mut self` methods, and `Device::dispatch` borrows
//!   the buffer mutably, so no CPU reference into the memory coexists with a kernel.

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

/// The mapped pointer of a `Buffer`. Only this field is made `Send + Sync`, not the struct.
struct MappedPtr(NonNull<u8>);

// SAFETY: the pointer addresses device memory mapped into this process, valid from any thread;
// `Buffer`'s methods give `&[u8]` only through `&self` and `&mut [u8]` only through
// `&mut self`, so Rust's borrow rules already serialise access across threads.
unsafe impl Send for MappedPtr {}
// SAFETY: as above: shared access is read-only through `&self`.
unsafe impl Sync for MappedPtr {}

/// A storage buffer the CPU and kernels share: host-visible, coherent, persistently mapped.
pub struct Buffer {
    pub(crate) shared: Arc<DeviceShared>,
    raw: vk::Buffer,
    memory: vk::DeviceMemory,
    size: u64,
    memory_type: u32,
    address: vk::DeviceAddress,
    mapped: MappedPtr,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("size", &self.size)
            .field("memory_type", &self.memory_type)
            .field("device_address", &format_args!("{:#x}", self.address))
            .finish_non_exhaustive()
    }
}

impl Buffer {
    /// Creates a zero-filled host-visible, coherent, mapped storage buffer of `size` bytes.
    pub(crate) fn new_host(shared: &Arc<DeviceShared>, size: u64) -> DeviceResult<Buffer> {
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
        let raw_device = &shared.raw;

        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST
                    | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: `raw_device` is live; `info` is valid (size > 0, bufferDeviceAddress enabled).
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
        let Some(memory_type) = find_memory_type(
            &report.memory_types,
            requirements.memory_type_bits,
            HOST_MAPPABLE,
            vk::MemoryPropertyFlags::HOST_CACHED,
        ) else {
            destroy(None);
            return Err(DeviceError::MissingFeature {
                device: report.name.clone(),
                what: "a HOST_VISIBLE | HOST_COHERENT memory type usable for storage buffers"
                    .into(),
            });
        };

        let mut flags =
            vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(requirements.size)
            .memory_type_index(memory_type)
            .push_next(&mut flags);
        // SAFETY: `alloc` names a memory type of this device; bufferDeviceAddress is enabled.
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
        // SAFETY: `mapped` addresses at least `requirements.size >= size` writable bytes that
        // nothing else references yet.
        unsafe { std::ptr::write_bytes(mapped.as_ptr(), 0, len) };

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
            mapped: MappedPtr(mapped),
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

    /// The buffer's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: module invariants: `mapped` points at `size` initialised bytes that live as
        // long as `self`; `&self` excludes kernels and CPU writers (they need `&mut`).
        unsafe { std::slice::from_raw_parts(self.mapped.0.as_ptr(), self.size as usize) }
    }

    /// The buffer's bytes, writable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `as_bytes`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.mapped.0.as_ptr(), self.size as usize) }
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
