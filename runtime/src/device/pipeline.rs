//! `ComputePipeline`: a compiled kernel turned into a Vulkan compute pipeline, with its
//! descriptor set layout (one storage buffer per kernel binding, set 0), pipeline layout
//! (plus one push-constant range for the kernel's `var<immediate>`), and one descriptor set.
//!
//! The descriptor set is rewritten on every dispatch; that is safe because dispatches are
//! synchronous and serialised by the device's submit lock (see `logical.rs`).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use ash::vk;

use super::buffer::Buffer;
use super::error::{DeviceError, DeviceResult};
use super::logical::DeviceShared;
use crate::kernel::{CompiledKernel, StorageBinding};

/// A compute pipeline plus everything needed to bind its arguments.
pub struct ComputePipeline {
    shared: Arc<DeviceShared>,
    pipeline: vk::Pipeline,
    layout: vk::PipelineLayout,
    set_layout: vk::DescriptorSetLayout,
    pool: vk::DescriptorPool,
    /// `None` when the kernel has no bindings.
    set: Option<vk::DescriptorSet>,
    bindings: Vec<StorageBinding>,
    immediate_size: u32,
    workgroup_size: [u32; 3],
    name: String,
}

impl std::fmt::Debug for ComputePipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComputePipeline")
            .field("name", &self.name)
            .field("bindings", &self.bindings)
            .field("immediate_size", &self.immediate_size)
            .field("workgroup_size", &self.workgroup_size)
            .finish_non_exhaustive()
    }
}

/// Handles created so far, destroyed in reverse order if pipeline creation fails midway.
#[derive(Default)]
struct Partial {
    module: vk::ShaderModule,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pool: vk::DescriptorPool,
}

impl Partial {
    /// # Safety
    /// The handles are null or were created from `device` and are used by no pending work.
    unsafe fn destroy(&self, device: &ash::Device) {
        // SAFETY: caller's contract; destroying a null handle is a no-op in Vulkan.
        unsafe {
            device.destroy_descriptor_pool(self.pool, None);
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_descriptor_set_layout(self.set_layout, None);
            device.destroy_shader_module(self.module, None);
        }
    }
}

impl ComputePipeline {
    /// Builds the pipeline for `kernel`, checking its interface against the device limits.
    pub(crate) fn new(shared: &Arc<DeviceShared>, kernel: &CompiledKernel) -> DeviceResult<Self> {
        let report = &shared.report;
        let name = format!("{}::{}", kernel.source_name, kernel.entry_point);
        let size = kernel.workgroup_size;
        let max = report.max_compute_work_group_size;
        let invocations = size.iter().map(|&s| u64::from(s)).product::<u64>();
        if (0..3).any(|i| size[i] > max[i])
            || invocations > u64::from(report.max_compute_work_group_invocations)
        {
            return Err(DeviceError::Shader(format!(
                "{name}: @workgroup_size{size:?} exceeds the device limits (size {max:?}, \
                 {} invocations); use a smaller workgroup",
                report.max_compute_work_group_invocations
            )));
        }
        if kernel.immediate_size > report.max_push_constants_size
            || !kernel.immediate_size.is_multiple_of(4)
        {
            return Err(DeviceError::Shader(format!(
                "{name}: its var<immediate> is {} bytes; the device allows at most {} and Vulkan \
                 needs a multiple of 4. Pass larger data in a storage buffer",
                kernel.immediate_size, report.max_push_constants_size
            )));
        }

        let storage = kernel.bindings.iter().filter(|b| b.uniform_bytes.is_none()).count();
        if storage > report.max_storage_buffers as usize {
            return Err(DeviceError::Shader(format!(
                "{name} binds {storage} storage buffers; the device allows {} per shader \
                 (maxPerStageDescriptorStorageBuffers)",
                report.max_storage_buffers
            )));
        }

        let device = &shared.raw;
        let mut partial = Partial::default();
        let result = (|| -> DeviceResult<(vk::Pipeline, Option<vk::DescriptorSet>)> {
            let module_info = vk::ShaderModuleCreateInfo::default().code(&kernel.spirv);
            // SAFETY: `kernel.spirv` is naga output for a validated module, targeting SPIR-V
            // 1.3 with only the capabilities unimem enables on the device.
            partial.module = unsafe { device.create_shader_module(&module_info, None) }.map_err(
                |e| match e {
                    vk::Result::ERROR_INVALID_SHADER_NV => {
                        DeviceError::Shader(format!("{name}: the driver rejected the SPIR-V"))
                    }
                    e => DeviceError::from_vk("vkCreateShaderModule", e),
                },
            )?;

            let layout_bindings: Vec<_> = kernel
                .bindings
                .iter()
                .map(|b| {
                    vk::DescriptorSetLayoutBinding::default()
                        .binding(b.binding)
                        .descriptor_type(descriptor_type(b))
                        .descriptor_count(1)
                        .stage_flags(vk::ShaderStageFlags::COMPUTE)
                })
                .collect();
            let set_layout_info =
                vk::DescriptorSetLayoutCreateInfo::default().bindings(&layout_bindings);
            // SAFETY: binding numbers are unique (checked by the compiler).
            partial.set_layout =
                unsafe { device.create_descriptor_set_layout(&set_layout_info, None) }
                    .map_err(DeviceError::at("vkCreateDescriptorSetLayout"))?;

            let ranges = [vk::PushConstantRange::default()
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
                .offset(0)
                .size(kernel.immediate_size)];
            let ranges: &[vk::PushConstantRange] = if kernel.immediate_size > 0 {
                &ranges
            } else {
                &[]
            };
            let set_layouts = [partial.set_layout];
            let layout_info = vk::PipelineLayoutCreateInfo::default()
                .set_layouts(&set_layouts)
                .push_constant_ranges(ranges);
            // SAFETY: the set layout is live; the range size is a non-zero multiple of 4
            // within maxPushConstantsSize (checked above) or absent.
            partial.layout = unsafe { device.create_pipeline_layout(&layout_info, None) }
                .map_err(DeviceError::at("vkCreatePipelineLayout"))?;

            let mut set = None;
            if !kernel.bindings.is_empty() {
                let uniform = kernel.bindings.iter().filter(|b| b.uniform_bytes.is_some()).count() as u32;
                let sizes: Vec<_> = [
                    (vk::DescriptorType::STORAGE_BUFFER, kernel.bindings.len() as u32 - uniform),
                    (vk::DescriptorType::UNIFORM_BUFFER, uniform),
                ]
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(ty, n)| vk::DescriptorPoolSize::default().ty(ty).descriptor_count(n))
                .collect();
                let pool_info = vk::DescriptorPoolCreateInfo::default()
                    .max_sets(1)
                    .pool_sizes(&sizes);
                // SAFETY: `pool_info` is valid.
                partial.pool = unsafe { device.create_descriptor_pool(&pool_info, None) }
                    .map_err(DeviceError::at("vkCreateDescriptorPool"))?;
                let alloc = vk::DescriptorSetAllocateInfo::default()
                    .descriptor_pool(partial.pool)
                    .set_layouts(&set_layouts);
                // SAFETY: the pool has room for exactly this set.
                set = Some(
                    unsafe { device.allocate_descriptor_sets(&alloc) }
                        .map_err(DeviceError::at("vkAllocateDescriptorSets"))?[0],
                );
            }

            let entry = std::ffi::CString::new(kernel.entry_point.as_str()).map_err(|_| {
                DeviceError::Shader(format!("{name}: the entry point name contains a NUL byte"))
            })?;
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(partial.module)
                .name(&entry);
            let info = [vk::ComputePipelineCreateInfo::default()
                .stage(stage)
                .layout(partial.layout)];
            // SAFETY: the module contains `entry` as a GLCompute entry point (naga wrote it
            // for that entry point); the layout declares every binding and the push-constant
            // range the entry point uses (reflected by the compiler).
            let pipeline =
                unsafe { device.create_compute_pipelines(vk::PipelineCache::null(), &info, None) }
                    .map_err(|(_, e)| DeviceError::from_vk("vkCreateComputePipelines", e))?[0];
            Ok((pipeline, set))
        })();

        match result {
            Ok((pipeline, set)) => {
                // SAFETY: the module is only needed during pipeline creation.
                unsafe { device.destroy_shader_module(partial.module, None) };
                LIVE.fetch_add(1, Relaxed);
                CREATED.fetch_add(1, Relaxed);
                Ok(ComputePipeline {
                    shared: Arc::clone(shared),
                    pipeline,
                    layout: partial.layout,
                    set_layout: partial.set_layout,
                    pool: partial.pool,
                    set,
                    bindings: kernel.bindings.clone(),
                    immediate_size: kernel.immediate_size,
                    workgroup_size: kernel.workgroup_size,
                    name,
                })
            }
            Err(e) => {
                // SAFETY: everything in `partial` was created above from `device` and no
                // work uses it.
                unsafe { partial.destroy(device) };
                Err(e)
            }
        }
    }

    /// The kernel's storage bindings, in the order `Device::dispatch` binds buffers.
    pub fn bindings(&self) -> &[StorageBinding] {
        &self.bindings
    }

    /// The size in bytes `Device::dispatch` expects for the immediates.
    pub fn immediate_size(&self) -> u32 {
        self.immediate_size
    }

    /// `@workgroup_size`.
    pub fn workgroup_size(&self) -> [u32; 3] {
        self.workgroup_size
    }

    /// `source::entry_point`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Checks a dispatch's arguments against the pipeline and the device limits.
    pub(crate) fn validate_dispatch(
        &self,
        shared: &Arc<DeviceShared>,
        buffers: &[&mut Buffer],
        immediates: &[u8],
        groups: [u32; 3],
    ) -> DeviceResult<()> {
        let name = &self.name;
        if !Arc::ptr_eq(&self.shared, shared) {
            return Err(DeviceError::Usage(format!(
                "pipeline {name} belongs to another device"
            )));
        }
        if buffers.len() != self.bindings.len() {
            let expected: Vec<String> = self
                .bindings
                .iter()
                .map(|b| {
                    format!(
                        "@binding({}) {}",
                        b.binding,
                        b.name.as_deref().unwrap_or("_")
                    )
                })
                .collect();
            return Err(DeviceError::Usage(format!(
                "{name} takes {} buffers ({}) but {} were passed",
                self.bindings.len(),
                expected.join(", "),
                buffers.len()
            )));
        }
        let range = u64::from(shared.report.max_storage_buffer_range);
        let uniform_range = u64::from(shared.report.max_uniform_buffer_range);
        for (buffer, binding) in buffers.iter().zip(&self.bindings) {
            if !Arc::ptr_eq(&buffer.shared, shared) {
                return Err(DeviceError::Usage(format!(
                    "the buffer for @binding({}) of {name} belongs to another device",
                    binding.binding
                )));
            }
            match binding.uniform_bytes {
                None if buffer.len() > range => {
                    return Err(DeviceError::Usage(format!(
                        "the buffer for @binding({}) of {name} is {} bytes, more than the device's \
                         maxStorageBufferRange of {range}; split it",
                        binding.binding,
                        buffer.len()
                    )));
                }
                Some(declared) if buffer.len() < declared || buffer.len() > uniform_range => {
                    return Err(DeviceError::Usage(format!(
                        "the buffer for the uniform @binding({}) of {name} is {} bytes; it must hold \
                         the {declared} bytes the kernel declares and fit the device's \
                         maxUniformBufferRange of {uniform_range}",
                        binding.binding,
                        buffer.len()
                    )));
                }
                _ => {}
            }
        }
        if immediates.len() != self.immediate_size as usize {
            return Err(DeviceError::Usage(format!(
                "{name} expects {} bytes of immediates (its var<immediate>) but got {}",
                self.immediate_size,
                immediates.len()
            )));
        }
        let max = shared.report.max_compute_work_group_count;
        if (0..3).any(|i| groups[i] > max[i]) {
            return Err(DeviceError::Usage(format!(
                "{name}: {groups:?} workgroups exceed the device's maxComputeWorkGroupCount {max:?}"
            )));
        }
        Ok(())
    }

    /// Points the descriptor set at `buffers` (the `i`-th at the `i`-th binding).
    ///
    /// # Safety
    /// The descriptor set is not used by pending work, and `validate_dispatch` accepted
    /// `buffers` (same device, same count).
    pub(crate) unsafe fn write_descriptors(&self, buffers: &[&mut Buffer]) {
        let Some(set) = self.set else { return };
        let infos: Vec<[vk::DescriptorBufferInfo; 1]> = buffers
            .iter()
            .map(|b| {
                [vk::DescriptorBufferInfo {
                    buffer: b.raw(),
                    offset: 0,
                    range: vk::WHOLE_SIZE,
                }]
            })
            .collect();
        let writes: Vec<vk::WriteDescriptorSet> = self
            .bindings
            .iter()
            .zip(&infos)
            .map(|(binding, info)| {
                vk::WriteDescriptorSet::default()
                    .dst_set(set)
                    .dst_binding(binding.binding)
                    .descriptor_type(descriptor_type(binding))
                    .buffer_info(info)
            })
            .collect();
        // SAFETY: caller's contract; every buffer is live and of this device; each range
        // (the whole buffer) is within maxStorageBufferRange (validated).
        unsafe { self.shared.raw.update_descriptor_sets(&writes, &[]) };
    }

    pub(crate) fn raw_pipeline(&self) -> vk::Pipeline {
        self.pipeline
    }

    pub(crate) fn raw_layout(&self) -> vk::PipelineLayout {
        self.layout
    }

    pub(crate) fn raw_descriptor_set(&self) -> Option<vk::DescriptorSet> {
        self.set
    }
}

/// Pipelines created in this process, and those of them not dropped yet.
static CREATED: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many compute pipelines exist now (created, not dropped yet; a pipeline leaked because
/// its device was lost still counts). For tests and diagnostics: kernels' pipelines must not
/// accumulate.
pub fn live_pipelines() -> usize {
    LIVE.load(Relaxed)
}

/// How many compute pipelines this process has created (for tests and diagnostics).
pub fn pipelines_created() -> usize {
    CREATED.load(Relaxed)
}

impl Drop for ComputePipeline {
    fn drop(&mut self) {
        if self.shared.is_poisoned() {
            return; // pending work may still use the pipeline: leak it
        }
        LIVE.fetch_sub(1, Relaxed);
        let device = &self.shared.raw;
        // SAFETY: dispatches wait for completion, so no pending work uses these objects;
        // the descriptor set is freed with its pool; the device outlives us (Arc).
        unsafe {
            device.destroy_pipeline(self.pipeline, None);
            device.destroy_pipeline_layout(self.layout, None);
            device.destroy_descriptor_pool(self.pool, None);
            device.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

/// The descriptor type a binding is declared with.
fn descriptor_type(b: &StorageBinding) -> vk::DescriptorType {
    match b.uniform_bytes {
        Some(_) => vk::DescriptorType::UNIFORM_BUFFER,
        None => vk::DescriptorType::STORAGE_BUFFER,
    }
}

