//! `unimem info`: gathering the CPU-fault probe, the Vulkan survey and a compute smoke test,
//! and rendering them as a human-readable report with an exit code.
//!
//! Kept in the library (not the binary) so tests can check the rendering and the binary
//! stays a thin argument parser.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::device::{self, select, Device, DeviceError, DeviceReport, VulkanSurvey};
use crate::faults::{uffd_abi, FaultProbe, Probe, UffdReport};
use crate::kernel;
use crate::options;

/// Exit code: a usable device was found and ran the smoke test.
pub const EXIT_OK: i32 = 0;
/// Exit code: a device exists but failed (smoke test or device creation error), or a runtime
/// option has a value the runtime refuses (it would not start).
pub const EXIT_DEVICE_FAILED: i32 = 1;
/// Exit code: no usable Vulkan device (no loader, no driver, or none meets the
/// requirements). Distinct from clap's usage-error code 2.
pub const EXIT_NO_DEVICE: i32 = 3;

/// The result of running a tiny kernel on the selected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeTest {
    /// Invocations run and checked.
    pub invocations: u32,
    /// Open + compile + pipeline + dispatch + check.
    pub total: Duration,
    /// The dispatch alone (submit + wait).
    pub dispatch: Duration,
}

/// Everything `unimem info` reports.
#[derive(Debug)]
pub struct Info {
    /// The CPU fault probes.
    pub faults: FaultProbe,
    /// The Vulkan survey, or why there is none (no loader, no device).
    pub vulkan: Result<VulkanSurvey, DeviceError>,
    /// The smoke test on the selected device (`None`: no device selected).
    pub smoke: Option<Result<SmokeTest, DeviceError>>,
    /// The first runtime option with a value the runtime refuses ([`DeviceError::Config`]).
    pub bad_option: Option<DeviceError>,
}

impl Info {
    /// Probes the CPU side, surveys Vulkan and runs the smoke test on the selected device.
    pub fn gather() -> Info {
        let faults = FaultProbe::run();
        let (vulkan, smoke) = match device::survey() {
            Err(e) => (Err(e), None),
            Ok((_instance, adapters, survey)) => {
                let smoke = survey
                    .selected
                    .as_ref()
                    .ok()
                    .map(|&i| smoke_test(&adapters[i]));
                (Ok(survey), smoke)
            }
        };
        let bad_option = options::ALL.iter().find_map(|o| options::validate(o).err()).map(DeviceError::Config);
        Info {
            faults,
            vulkan,
            smoke,
            bad_option,
        }
    }

    /// The problem that stops unimem from running kernels here, if any.
    pub fn problem(&self) -> Option<&DeviceError> {
        if let Some(e) = &self.bad_option {
            return Some(e);
        }
        match &self.vulkan {
            Err(e) => Some(e),
            Ok(s) => match (&s.selected, &self.smoke) {
                (Err(e), _) => Some(e),
                (Ok(_), Some(Err(e))) => Some(e),
                _ => None,
            },
        }
    }

    /// [`EXIT_OK`], [`EXIT_NO_DEVICE`] or [`EXIT_DEVICE_FAILED`].
    pub fn exit_code(&self) -> i32 {
        match self.problem() {
            None => EXIT_OK,
            Some(e)
                if e.is_unavailable()
                    || matches!(
                        e,
                        DeviceError::UnknownDevice { .. } | DeviceError::AmbiguousDevice { .. }
                    ) =>
            {
                EXIT_NO_DEVICE
            }
            Some(_) => EXIT_DEVICE_FAILED,
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "unimem {} system report", env!("CARGO_PKG_VERSION"));
        render_faults(&mut out, &self.faults);
        render_vulkan(&mut out, &self.vulkan, self.smoke.as_ref());
        render_options(&mut out);
        out.push('\n');
        match self.problem() {
            None => {
                let _ = writeln!(
                    out,
                    "Result: ready (CPU fault probes above; kernels run on the selected device)."
                );
            }
            Some(e) => {
                let why = if self.bad_option.is_some() {
                    "the runtime refuses this configuration"
                } else {
                    "unimem cannot run kernels on this machine"
                };
                let _ = writeln!(out, "Result: NOT READY: {why}.");
                // One sentence per line: what happened, then what to do.
                let text = e.to_string().replace(". To fix: ", ".\n  To fix: ");
                let _ = writeln!(out, "  {text}");
            }
        }
        out
    }
}

/// Compiles and runs `out[i] = i * 3 + 1` plus a 64-bit check on 1024 invocations.
pub fn smoke_test(adapter: &device::Adapter) -> Result<SmokeTest, DeviceError> {
    const N: u32 = 1024;
    const SRC: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let wide: u64 = (u64(id.x) << 32u) | u64(id.x * 3u + 1u);
    out[id.x] = u32(wide & 0xfffffffflu) ^ u32(wide >> 32u) ^ id.x;
}
"#;
    let start = Instant::now();
    let device = Device::open_adapter(adapter)?;
    let kernel = kernel::compile_wgsl_named("smoke-test.wgsl", SRC, "main")
        .map_err(|e| DeviceError::Shader(e.to_string()))?;
    let pipeline = device.create_pipeline(&kernel)?;
    let mut buffer = device.create_host_buffer(u64::from(N) * 4)?;
    let dispatch_start = Instant::now();
    device.dispatch(
        &pipeline,
        &mut [&mut buffer],
        &[],
        [kernel.groups_for(N), 1, 1],
    )?;
    let dispatch = dispatch_start.elapsed();
    let out: &[u32] = buffer.as_slice();
    if let Some(i) = (0..N).find(|&i| out[i as usize] != i * 3 + 1) {
        return Err(DeviceError::Shader(format!(
            "smoke test produced wrong results: out[{i}] = {}, expected {}; the driver miscompiles \
             64-bit integer code",
            out[i as usize],
            i * 3 + 1
        )));
    }
    let errors = device::validation_errors();
    if errors > 0 {
        return Err(DeviceError::Shader(format!(
            "the smoke test triggered {errors} Vulkan validation error(s), printed on stderr; \
             this is a bug in unimem or the driver: please report it with that output"
        )));
    }
    Ok(SmokeTest {
        invocations: N,
        total: start.elapsed(),
        dispatch,
    })
}

fn works(p: &Probe) -> String {
    match p {
        Ok(()) => "works".into(),
        Err(e) => format!("no: {e}"),
    }
}

fn render_uffd(out: &mut String, label: &str, probe: &Probe<UffdReport>) {
    match probe {
        Err(e) => {
            let _ = writeln!(out, "  {label:<36} unavailable: {e}");
        }
        Ok(r) => {
            let _ = writeln!(out, "  {label:<36} available");
            let names = uffd_abi::feature_names(r.features);
            let _ = writeln!(out, "      features: {}", names.join(" "));
            let _ = writeln!(
                out,
                "      SIGBUS mode, fault filled in-thread by UFFDIO_COPY: {}",
                works(&r.sigbus)
            );
            let _ = writeln!(
                out,
                "      write-protect (MODE_WP + UFFDIO_WRITEPROTECT):     {}",
                works(&r.write_protect)
            );
            if let Some(k) = &r.kernel_fault {
                let _ = writeln!(
                    out,
                    "      kernel-mode fault served by a handler thread:    {}",
                    works(k)
                );
            }
        }
    }
}

fn render_faults(out: &mut String, f: &FaultProbe) {
    let _ = writeln!(out, "\nCPU faults (each mechanism tried in this process)");
    let _ = writeln!(out, "  {:<36} {} bytes", "page size", f.page_size);
    let show = |v: Option<u64>| v.map_or("unreadable".to_owned(), |v| v.to_string());
    let _ = writeln!(
        out,
        "  {:<36} {}",
        "vm.max_map_count",
        show(f.max_map_count)
    );
    let _ = writeln!(
        out,
        "  {:<36} {}",
        "vm.unprivileged_userfaultfd",
        show(f.unprivileged_userfaultfd)
    );
    render_uffd(out, "userfaultfd(UFFD_USER_MODE_ONLY)", &f.uffd_user_mode);
    render_uffd(
        out,
        "userfaultfd (kernel-mode faults too)",
        &f.uffd_kernel_mode,
    );
    render_uffd(out, "/dev/userfaultfd", &f.dev_userfaultfd);
    let _ = writeln!(
        out,
        "  {:<36} {}",
        "SIGSEGV + mprotect",
        works(&f.signal_mprotect)
    );
    let _ = writeln!(
        out,
        "  {:<36} {}",
        "pwrite(/proc/self/mem) atomic fill",
        works(&f.proc_self_mem)
    );
    let _ = writeln!(
        out,
        "  {:<36} {}",
        "atomic page fill available",
        if f.has_atomic_fill() {
            "yes"
        } else {
            "NO: only the racy signal + mprotect path"
        }
    );
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{n} ({v:.1} {})", UNITS[unit])
    }
}

fn flags<T: std::fmt::Debug + PartialEq + Default>(f: T) -> String {
    if f == T::default() {
        "(none)".into()
    } else {
        format!("{f:?}")
    }
}

fn render_device(out: &mut String, r: &DeviceReport, selected: bool) {
    let mark = if selected { "   <- selected" } else { "" };
    let _ = writeln!(out, "  device {}: {}{mark}", r.index, r.name);
    let _ = writeln!(out, "    {:<28} {}", "type", r.kind);
    let _ = writeln!(
        out,
        "    {:<28} {} ({})",
        "driver",
        r.driver_name_or_unknown(),
        r.driver_info.as_deref().unwrap_or("no driver info")
    );
    let _ = writeln!(out, "    {:<28} {}", "Vulkan", r.api_version);
    let _ = writeln!(
        out,
        "    {:<28} {:#06x} / {:#06x}",
        "vendor / device id", r.vendor_id, r.device_id
    );
    let _ = writeln!(out, "    required:");
    for req in select::REQUIREMENTS {
        let ok = if (req.met)(r) { "present" } else { "MISSING" };
        let _ = writeln!(out, "      {ok:<8} {} (for {})", req.name, req.needed_for);
    }
    let _ = writeln!(out, "    optional:");
    let yes = |b: bool| if b { "present" } else { "absent" };
    let _ = writeln!(
        out,
        "      {:<8} variablePointers",
        yes(r.variable_pointers)
    );
    match r.external_memory_host {
        Some(h) => {
            let _ = writeln!(
                out,
                "      present  VK_EXT_external_memory_host (minImportedHostPointerAlignment {})",
                h.min_imported_host_pointer_alignment
            );
        }
        None => {
            let _ = writeln!(
                out,
                "      absent   VK_EXT_external_memory_host (mirror mode unavailable)"
            );
        }
    }
    let _ = writeln!(out, "    limits:");
    let _ = writeln!(
        out,
        "      {:<34} {}",
        "maxStorageBufferRange",
        bytes(u64::from(r.max_storage_buffer_range))
    );
    let _ = writeln!(
        out,
        "      {:<34} {}",
        "maxMemoryAllocationSize",
        bytes(r.max_memory_allocation_size)
    );
    let _ = writeln!(
        out,
        "      {:<34} {}",
        "maxPushConstantsSize", r.max_push_constants_size
    );
    let _ = writeln!(
        out,
        "      {:<34} {:?}",
        "maxComputeWorkGroupCount", r.max_compute_work_group_count
    );
    let _ = writeln!(
        out,
        "      {:<34} {:?} (at most {} invocations)",
        "maxComputeWorkGroupSize",
        r.max_compute_work_group_size,
        r.max_compute_work_group_invocations
    );
    let _ = writeln!(
        out,
        "      {:<34} {}",
        "minStorageBufferOffsetAlignment", r.min_storage_buffer_offset_alignment
    );
    let _ = writeln!(out, "    memory heaps:");
    for (i, h) in r.memory_heaps.iter().enumerate() {
        let _ = writeln!(out, "      heap {i}: {} {}", bytes(h.size), flags(h.flags));
    }
    let _ = writeln!(out, "    memory types:");
    for (i, t) in r.memory_types.iter().enumerate() {
        let _ = writeln!(out, "      type {i}: heap {} {}", t.heap, flags(t.flags));
    }
}

fn render_vulkan(
    out: &mut String,
    vulkan: &Result<VulkanSurvey, DeviceError>,
    smoke: Option<&Result<SmokeTest, DeviceError>>,
) {
    let _ = writeln!(out, "\nVulkan");
    let survey = match vulkan {
        Ok(s) => s,
        Err(e) => {
            let what = e.to_string();
            let short = what.split(". To fix:").next().unwrap_or(&what);
            let _ = writeln!(
                out,
                "  not available: {short} (what to do: see Result below)"
            );
            return;
        }
    };
    let _ = writeln!(
        out,
        "  {:<30} {} (Vulkan {})",
        "loader", survey.library, survey.loader_version
    );
    let validation = if survey.validation {
        "on"
    } else if cfg!(debug_assertions) {
        "off (VK_LAYER_KHRONOS_validation not installed: apt-get install vulkan-validationlayers)"
    } else {
        "off (release build)"
    };
    let _ = writeln!(out, "  {:<30} {validation}", "validation layer");
    let selected = survey.selected.as_ref().ok().copied();
    for (i, r) in survey.devices.iter().enumerate() {
        render_device(out, r, selected == Some(i));
    }
    match (&survey.selected, smoke) {
        (Err(_), _) => {
            let _ = writeln!(out, "  selection: none (see Result below)");
        }
        (Ok(i), Some(Ok(s))) => {
            let _ = writeln!(
                out,
                "  selection: device {i}; compute smoke test passed ({} invocations with 64-bit \
                 arithmetic, dispatch {:.2} ms, {:.1} ms including device and pipeline creation)",
                s.invocations,
                s.dispatch.as_secs_f64() * 1e3,
                s.total.as_secs_f64() * 1e3
            );
        }
        (Ok(i), Some(Err(e))) => {
            let _ = writeln!(
                out,
                "  selection: device {i}; compute smoke test FAILED: {e}"
            );
        }
        (Ok(i), None) => {
            let _ = writeln!(out, "  selection: device {i}");
        }
    }
}

fn render_options(out: &mut String) {
    let _ = writeln!(out, "\nConfiguration");
    for o in options::ALL {
        match o.value() {
            Some(v) => match options::validate(o) {
                Ok(()) => {
                    let _ = writeln!(out, "  {}={v}", o.name);
                }
                Err(e) => {
                    let _ = writeln!(out, "  {}={v}  INVALID: {e}", o.name);
                }
            },
            None => {
                let _ = writeln!(out, "  {} unset: {}", o.name, o.default);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_are_readable() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(128 << 20), "134217728 (128.0 MiB)");
        assert_eq!(bytes(2 << 30), "2147483648 (2.0 GiB)");
    }

    #[test]
    fn no_loader_report_says_what_to_do() {
        let info = Info {
            faults: FaultProbe::run(),
            vulkan: Err(DeviceError::NoLoader {
                library: "/nope.so".into(),
                detail: "not found".into(),
            }),
            smoke: None,
            bad_option: None,
        };
        assert_eq!(info.exit_code(), EXIT_NO_DEVICE);
        let text = info.render();
        assert!(text.contains("CPU faults"), "{text}");
        assert!(
            text.contains("not available: cannot load the Vulkan loader `/nope.so`"),
            "{text}"
        );
        assert!(text.contains("NOT READY"), "{text}");
        assert!(text.contains("mesa-vulkan-drivers"), "{text}");
    }
}
