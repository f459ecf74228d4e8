//! `Device`: the logical device, its compute queue, and synchronous submission.
//!
//! Owns the `VkDevice` and the objects that exist once per device: the compute queue, a
//! command pool with one reusable command buffer, and one fence. Buffers and pipelines are
//! in their own files and hold an `Arc<DeviceShared>`, so the `VkDevice` outlives them.
//!
//! Invariants (`DeviceShared`):
//! - `submit` (the queue, command pool, command buffer and fence, all externally
//!   synchronised objects in Vulkan) is only touched with its mutex held;
//! - when `submit`'s mutex is free, no work using its command pool, command buffer or fence is
//!   pending unless `poisoned` is set (every dispatch waits for its fence before unlocking);
//!   other submitters ([`DeviceShared::submit_one`]: the staging ring of the migration
//!   engine) take the mutex only to call `vkQueueSubmit`, own their command buffers and
//!   fences, and wait for them before reusing or destroying what the work uses;
//! - `poisoned` is set when a wait timed out or the device was lost: work may still be
//!   pending, so nothing created from this device is destroyed any more (leaking is the only
//!   safe choice), and every later submission fails.
//!
//! Drop order: `Device` -> last `Arc<DeviceShared>` -> wait idle, fence, command pool,
//! `VkDevice` -> `Arc<Instance>` -> `VkInstance` -> loader library.

use std::ffi::c_char;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ash::vk;

use super::buffer::Buffer;
use super::error::{DeviceError, DeviceResult};
use super::instance::{Adapter, Instance};
use super::pipeline::ComputePipeline;
use super::report::DeviceReport;
use super::select;
use crate::options;

/// How long a dispatch may run before the device is declared hung.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The objects Vulkan requires to be externally synchronised. Protected by `DeviceShared::submit`.
struct Submit {
    queue: vk::Queue,
    pool: vk::CommandPool,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
}

/// State shared by a `Device` and everything created from it.
pub(crate) struct DeviceShared {
    pub(crate) raw: ash::Device,
    pub(crate) report: DeviceReport,
    queue_family: u32,
    /// See the module invariants.
    submit: Mutex<Submit>,
    /// Set once, never cleared; `Relaxed` suffices because it is only a flag read after
    /// failures and in `Drop`, with the `submit` mutex ordering the submissions themselves.
    poisoned: AtomicBool,
    /// Wait timeout in nanoseconds (`Relaxed`: a plain setting).
    timeout_ns: AtomicU64,
    external_memory_host: bool,
    /// Released in `Drop` after `raw` is destroyed; leaked with the device when poisoned
    /// (destroying an instance whose device still runs work is invalid, and hangs lavapipe).
    instance: ManuallyDrop<Arc<Instance>>,
}

impl DeviceShared {
    /// True when the device must not be used or destroyed any more (see the module docs).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }

    /// The queue family of the queue every submission goes to.
    pub(crate) fn queue_family(&self) -> u32 {
        self.queue_family
    }

    /// Maps a failing result and poisons the device when it was lost.
    pub(crate) fn fail(&self, call: &'static str, result: vk::Result) -> DeviceError {
        let err = DeviceError::from_vk(call, result);
        if matches!(err, DeviceError::DeviceLost { .. }) {
            self.poison();
        }
        err
    }

    fn lock_submit(&self) -> MutexGuard<'_, Submit> {
        // A panic while holding the lock leaves the Vulkan objects consistent (every
        // failure path below returns before unlocking), so a poisoned mutex is usable.
        self.submit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits `cmd` to the device's queue, signalling `fence` when it completes. Serialised
    /// with dispatches (which hold the queue for their whole run). `call` names the
    /// operation in errors.
    ///
    /// # Safety
    /// `cmd` is an executable command buffer of this device, from a pool of
    /// [`DeviceShared::queue_family`], and not pending; `fence` is an unsignalled fence of this
    /// device not used by pending work; everything `cmd` uses stays alive and unused by the
    /// host until `fence` has signalled (or the device is poisoned, when it is leaked).
    pub(crate) unsafe fn submit_one(
        &self,
        cmd: vk::CommandBuffer,
        fence: vk::Fence,
        call: &'static str,
    ) -> DeviceResult<()> {
        let submit = self.lock_submit();
        if self.is_poisoned() {
            return Err(DeviceError::DeviceLost { call });
        }
        let cmds = [cmd];
        let info = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: the caller's contract; queue access is serialised by the submit lock.
        unsafe { self.raw.queue_submit(submit.queue, &info, fence) }.map_err(|e| self.fail(call, e))
    }

    /// Waits (up to the device's timeout) for `fence`, then resets it. On timeout or failure
    /// the device is poisoned, since the work may still be running; `what` names the work.
    pub(crate) fn wait_and_reset(
        &self,
        fence: vk::Fence,
        what: impl FnOnce() -> String,
    ) -> DeviceResult<()> {
        let timeout = self.timeout_ns.load(Ordering::Relaxed);
        // SAFETY: the fence belongs to this device (caller's use of its own fence).
        let waited = unsafe { self.raw.wait_for_fences(&[fence], true, timeout) };
        match waited {
            Ok(()) => {}
            Err(vk::Result::TIMEOUT) => {
                self.poison();
                return Err(DeviceError::Timeout {
                    what: what(),
                    millis: Duration::from_nanos(timeout).as_millis() as u64,
                });
            }
            Err(e) => {
                // The work may still be pending: never reuse or destroy what it touches.
                self.poison();
                return Err(DeviceError::from_vk("vkWaitForFences", e));
            }
        }
        // SAFETY: the fence is signalled and no longer used by any pending submission.
        unsafe { self.raw.reset_fences(&[fence]) }.map_err(|e| {
            // A fence left signalled cannot be submitted with again.
            self.poison();
            DeviceError::from_vk("vkResetFences", e)
        })
    }
}

impl Drop for DeviceShared {
    fn drop(&mut self) {
        if self.is_poisoned() {
            // Work may still be running; destroying anything it uses, the device or its
            // instance is undefined behaviour. Leak them all (`instance` stays ManuallyDrop).
            return;
        }
        let submit = self.submit.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: this is the last reference, so no buffer or pipeline of this device is
        // alive and no other thread submits; after the idle wait nothing is pending, so the
        // fence, the pool (and its command buffer) and then the device can be destroyed.
        unsafe {
            let _ = self.raw.device_wait_idle();
            self.raw.destroy_fence(submit.fence, None);
            self.raw.destroy_command_pool(submit.pool, None);
            self.raw.destroy_device(None);
        }
        // SAFETY: the device is destroyed and `instance` is not used after this.
        unsafe { ManuallyDrop::drop(&mut self.instance) };
    }
}

/// An open Vulkan device ready to run compute kernels.
///
/// `Device` is `Send + Sync`; submissions from several threads are serialised.
pub struct Device {
    pub(crate) shared: Arc<DeviceShared>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.shared.report.name)
            .field("index", &self.shared.report.index)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Opens the device unimem should use: loads the loader, enumerates the devices and
    /// picks one as `UNIMEM_DEVICE` says (see [`select::choose`]).
    pub fn open() -> DeviceResult<Device> {
        let instance = Instance::new()?;
        let adapters = instance.adapters()?;
        let reports: Vec<DeviceReport> = adapters.iter().map(|a| a.report.clone()).collect();
        let chosen = select::choose(&reports, options::DEVICE.value().as_deref())?;
        Device::open_adapter(&adapters[chosen])
    }

    /// Opens a specific device. Fails with [`DeviceError::MissingFeature`] when it does not
    /// meet [`select::REQUIREMENTS`].
    pub fn open_adapter(adapter: &Adapter) -> DeviceResult<Device> {
        let report = &adapter.report;
        select::check(report)?;
        let queue_family = report
            .compute_queue_family
            .expect("select::check guarantees a compute queue family");
        let instance = Arc::clone(&adapter.instance);

        let priorities = [1.0f32];
        let queue_info = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family)
            .queue_priorities(&priorities)];

        let mut extensions: Vec<*const c_char> = Vec::new();
        let external_memory_host = report.external_memory_host.is_some();
        if external_memory_host {
            extensions.push(ash::ext::external_memory_host::NAME.as_ptr());
        }
        if report.portability_subset {
            // The spec requires enabling it whenever the device offers it.
            extensions.push(ash::khr::portability_subset::NAME.as_ptr());
        }

        // 64-bit floats when offered: kernels that use `f64` need them (`kernel/check.rs`
        // refuses such kernels on devices without).
        let base_features = vk::PhysicalDeviceFeatures::default().shader_int64(true).shader_float64(report.shader_float64);
        let mut f11 = vk::PhysicalDeviceVulkan11Features::default()
            .variable_pointers_storage_buffer(report.variable_pointers)
            .variable_pointers(report.variable_pointers);
        let mut f12 = vk::PhysicalDeviceVulkan12Features::default().buffer_device_address(true);
        let create_info = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queue_info)
            .enabled_extension_names(&extensions)
            .enabled_features(&base_features)
            .push_next(&mut f11)
            .push_next(&mut f12);

        // SAFETY: `adapter.physical` belongs to the live `instance`; every feature enabled
        // was reported supported (checked by `select::check`, or conditional on the report)
        // and every extension was listed by the device; all pointed-to data lives until
        // the call returns.
        let raw = unsafe {
            instance
                .raw()
                .create_device(adapter.physical, &create_info, None)
        }
        .map_err(DeviceError::at("vkCreateDevice"))?;

        // From here on, a failure must destroy `raw`: build the rest in a closure.
        let make_submit = || -> DeviceResult<Submit> {
            // SAFETY: the queue family was created with one queue above.
            let queue = unsafe { raw.get_device_queue(queue_family, 0) };
            let pool_info = vk::CommandPoolCreateInfo::default()
                .queue_family_index(queue_family)
                .flags(vk::CommandPoolCreateFlags::TRANSIENT);
            // SAFETY: `raw` is a live device; `pool_info` is valid.
            let pool = unsafe { raw.create_command_pool(&pool_info, None) }
                .map_err(DeviceError::at("vkCreateCommandPool"))?;
            let alloc = vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .level(vk::CommandBufferLevel::PRIMARY)
                .command_buffer_count(1);
            // SAFETY: `pool` was just created from `raw`.
            let cmd = match unsafe { raw.allocate_command_buffers(&alloc) } {
                Ok(v) => v[0],
                Err(e) => {
                    // SAFETY: `pool` is unused.
                    unsafe { raw.destroy_command_pool(pool, None) };
                    return Err(DeviceError::from_vk("vkAllocateCommandBuffers", e));
                }
            };
            // SAFETY: `raw` is a live device.
            let fence = match unsafe { raw.create_fence(&vk::FenceCreateInfo::default(), None) } {
                Ok(f) => f,
                Err(e) => {
                    // SAFETY: `pool` and its command buffer are unused.
                    unsafe { raw.destroy_command_pool(pool, None) };
                    return Err(DeviceError::from_vk("vkCreateFence", e));
                }
            };
            Ok(Submit {
                queue,
                pool,
                cmd,
                fence,
            })
        };
        let submit = match make_submit() {
            Ok(s) => s,
            Err(e) => {
                // SAFETY: nothing created from `raw` survives `make_submit`'s failure.
                unsafe { raw.destroy_device(None) };
                return Err(e);
            }
        };

        Ok(Device {
            shared: Arc::new(DeviceShared {
                raw,
                report: report.clone(),
                queue_family,
                submit: Mutex::new(submit),
                poisoned: AtomicBool::new(false),
                timeout_ns: AtomicU64::new(DEFAULT_TIMEOUT.as_nanos() as u64),
                external_memory_host,
                instance: ManuallyDrop::new(instance),
            }),
        })
    }

    /// What this device offers.
    pub fn report(&self) -> &DeviceReport {
        &self.shared.report
    }

    /// The instance this device was created from.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.shared.instance
    }

    /// The queue family of the compute queue.
    pub fn queue_family(&self) -> u32 {
        self.shared.queue_family
    }

    /// True when `VK_EXT_external_memory_host` was enabled (mirror mode is possible).
    pub fn external_memory_host_enabled(&self) -> bool {
        self.shared.external_memory_host
    }

    /// True after a timeout or device loss: the device can no longer run anything.
    pub fn is_lost(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Sets how long [`Device::dispatch`] waits before declaring the device hung.
    pub fn set_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.shared.timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Creates a zero-filled storage buffer of `size` bytes in host-visible, coherent memory,
    /// mapped for its whole life. See [`Buffer`].
    pub fn create_host_buffer(&self, size: u64) -> DeviceResult<Buffer> {
        Buffer::new_host(&self.shared, size)
    }

    /// Creates a compute pipeline for a compiled kernel. See [`ComputePipeline`].
    pub fn create_pipeline(
        &self,
        kernel: &crate::kernel::CompiledKernel,
    ) -> DeviceResult<ComputePipeline> {
        ComputePipeline::new(&self.shared, kernel)
    }

    /// Runs `pipeline` over `groups` workgroups and waits for it to finish.
    ///
    /// `buffers[i]` is bound to the kernel's `i`-th storage binding in binding-number order
    /// (see `CompiledKernel::bindings`); `immediates` are the push-constant bytes (exactly
    /// the size of the kernel's `var<immediate>`, empty when it has none). Buffers are
    /// borrowed mutably because the kernel may write them: no CPU reference into their
    /// memory can exist during the dispatch. When this returns `Ok`, the kernel's writes
    /// are visible through [`Buffer::as_slice`].
    pub fn dispatch(
        &self,
        pipeline: &ComputePipeline,
        buffers: &mut [&mut Buffer],
        immediates: &[u8],
        groups: [u32; 3],
    ) -> DeviceResult<()> {
        let shared = &self.shared;
        pipeline.validate_dispatch(shared, buffers, immediates, groups)?;
        let submit = shared.lock_submit();
        if shared.is_poisoned() {
            return Err(DeviceError::DeviceLost {
                call: "an earlier dispatch on this device",
            });
        }
        // SAFETY: the submit lock is held and the device is not poisoned, so no earlier
        // work is pending (module invariant) and the command buffer, pool, fence and the
        // pipeline's descriptor set are free to reuse; the arguments were validated.
        unsafe { self.record_and_run(&submit, pipeline, buffers, immediates, groups) }
    }

    /// Records the dispatch into the reusable command buffer, submits it and waits.
    ///
    /// # Safety
    /// The caller holds the submit lock (`submit` is its guard), the device is not
    /// poisoned, and `validate_dispatch` accepted the arguments.
    unsafe fn record_and_run(
        &self,
        submit: &Submit,
        pipeline: &ComputePipeline,
        buffers: &[&mut Buffer],
        immediates: &[u8],
        groups: [u32; 3],
    ) -> DeviceResult<()> {
        let shared = &self.shared;
        let raw = &shared.raw;
        let cmd = submit.cmd;

        // SAFETY: no work is pending (caller's guarantee), so the descriptor set is not in
        // use; every buffer belongs to this device and is alive for the call.
        unsafe { pipeline.write_descriptors(buffers) };

        // SAFETY: the pool's only command buffer is not pending (caller's guarantee).
        unsafe { raw.reset_command_pool(submit.pool, vk::CommandPoolResetFlags::empty()) }
            .map_err(|e| shared.fail("vkResetCommandPool", e))?;
        let begin = vk::CommandBufferBeginInfo::default()
            .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT);
        // SAFETY: `cmd` is in the initial state after the pool reset.
        unsafe { raw.begin_command_buffer(cmd, &begin) }
            .map_err(|e| shared.fail("vkBeginCommandBuffer", e))?;

        // Make the kernel's writes visible to the host once the fence signals.
        let to_host = [vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::SHADER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)];
        // SAFETY: `cmd` is recording; the pipeline, its layout and descriptor set belong
        // to this device; the immediates length equals the layout's push-constant range
        // (validated); the group counts are within the device limits (validated).
        unsafe {
            raw.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, pipeline.raw_pipeline());
            if let Some(set) = pipeline.raw_descriptor_set() {
                raw.cmd_bind_descriptor_sets(
                    cmd,
                    vk::PipelineBindPoint::COMPUTE,
                    pipeline.raw_layout(),
                    0,
                    &[set],
                    &[],
                );
            }
            if !immediates.is_empty() {
                raw.cmd_push_constants(
                    cmd,
                    pipeline.raw_layout(),
                    vk::ShaderStageFlags::COMPUTE,
                    0,
                    immediates,
                );
            }
            raw.cmd_dispatch(cmd, groups[0], groups[1], groups[2]);
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &to_host,
                &[],
                &[],
            );
        }
        // SAFETY: `cmd` is recording.
        unsafe { raw.end_command_buffer(cmd) }.map_err(|e| shared.fail("vkEndCommandBuffer", e))?;

        let cmds = [cmd];
        let submit_info = [vk::SubmitInfo::default().command_buffers(&cmds)];
        // SAFETY: the fence is unsignalled (created so, and reset after every successful
        // wait below); queue access is serialised by the submit lock; host writes made
        // before this call are visible to the device (vkQueueSubmit's implicit host
        // synchronisation on coherent memory).
        unsafe { raw.queue_submit(submit.queue, &submit_info, submit.fence) }
            .map_err(|e| shared.fail("vkQueueSubmit", e))?;
        shared.wait_and_reset(submit.fence, || {
            format!("compute dispatch of {}", pipeline.name())
        })
    }
}
