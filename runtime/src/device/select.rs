//! Choosing a device: the list of requirements (the one place it lives) and the selection
//! policy, as pure functions over [`DeviceReport`]s.
//!
//! Policy: `UNIMEM_DEVICE` picks a device by index or by a case-insensitive part of its name,
//! and the chosen device must meet every requirement (else [`DeviceError::MissingFeature`]).
//! Without it, the best kind among the devices that meet every requirement wins
//! (discrete > integrated > virtual > CPU > other; ties go to the lower index).

use super::error::{DeviceError, DeviceResult};
use super::instance::REQUIRED_API;
use super::report::DeviceReport;
use ash::vk;

/// One thing a device must offer to run unimem.
#[derive(Clone, Copy)]
pub struct Requirement {
    /// What is required, in Vulkan's words (`shaderInt64`).
    pub name: &'static str,
    /// Why unimem needs it.
    pub needed_for: &'static str,
    /// Whether a device meets it.
    pub met: fn(&DeviceReport) -> bool,
}

impl std::fmt::Debug for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requirement")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The memory flags every mapped buffer needs.
pub const HOST_MAPPABLE: vk::MemoryPropertyFlags = vk::MemoryPropertyFlags::from_raw(
    vk::MemoryPropertyFlags::HOST_VISIBLE.as_raw()
        | vk::MemoryPropertyFlags::HOST_COHERENT.as_raw(),
);

/// Everything a device must offer. `Device::open` enables the matching features.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        name: "Vulkan 1.2",
        needed_for: "the feature structures and buffer device addresses unimem relies on",
        met: |r| {
            r.api_version
                .at_least(REQUIRED_API.major(), REQUIRED_API.minor())
        },
    },
    Requirement {
        name: "a compute queue",
        needed_for: "running kernels",
        met: |r| r.compute_queue_family.is_some(),
    },
    Requirement {
        name: "shaderInt64",
        needed_for: "64-bit host pointers inside kernels",
        met: |r| r.shader_int64,
    },
    Requirement {
        name: "bufferDeviceAddress",
        needed_for: "device page tables and frames addressed by 64-bit device addresses",
        met: |r| r.buffer_device_address,
    },
    Requirement {
        name: "a HOST_VISIBLE | HOST_COHERENT memory type",
        needed_for: "mapped buffers shared with the CPU",
        met: |r| r.has_memory_type(HOST_MAPPABLE),
    },
];

/// The requirements `report` does not meet (empty: the device is usable).
pub fn missing(report: &DeviceReport) -> Vec<&'static Requirement> {
    REQUIREMENTS
        .iter()
        .filter(|req| !(req.met)(report))
        .collect()
}

/// `Ok` when `report` meets every requirement, else [`DeviceError::MissingFeature`]
/// naming each missing one and what it is needed for.
pub fn check(report: &DeviceReport) -> DeviceResult<()> {
    let missing = missing(report);
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing
        .iter()
        .map(|r| format!("{} (needed for {})", r.name, r.needed_for))
        .collect::<Vec<_>>()
        .join(", ");
    Err(DeviceError::MissingFeature {
        device: report.name.clone(),
        what,
    })
}

/// `index: name [kind, driver, Vulkan x.y.z]` for each device, `; `-separated.
pub fn list_devices<'a>(reports: impl IntoIterator<Item = &'a DeviceReport>) -> String {
    reports
        .into_iter()
        .map(|r| {
            format!(
                "{}: {} [{}, driver {}, Vulkan {}]",
                r.index,
                r.name,
                r.kind,
                r.driver_name_or_unknown(),
                r.api_version
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Picks a device: `requested` is the value of `UNIMEM_DEVICE` (`None`: automatic).
/// Returns a position in `reports`.
pub fn choose(reports: &[DeviceReport], requested: Option<&str>) -> DeviceResult<usize> {
    if reports.is_empty() {
        return Err(DeviceError::NoDevice {
            detail: "the device list is empty".into(),
        });
    }
    let requested = requested.map(str::trim).filter(|s| !s.is_empty());
    let Some(requested) = requested else {
        return choose_automatically(reports);
    };

    let position = if requested.bytes().all(|b| b.is_ascii_digit()) {
        let index: Option<usize> = requested.parse().ok();
        reports.iter().position(|r| Some(r.index) == index)
    } else {
        let needle = requested.to_lowercase();
        let matches: Vec<usize> = reports
            .iter()
            .enumerate()
            .filter(|(_, r)| r.name.to_lowercase().contains(&needle))
            .map(|(i, _)| i)
            .collect();
        if matches.len() > 1 {
            return Err(DeviceError::AmbiguousDevice {
                requested: requested.to_owned(),
                devices: list_devices(matches.iter().map(|&i| &reports[i])),
            });
        }
        matches.first().copied()
    };
    let position = position.ok_or_else(|| DeviceError::UnknownDevice {
        requested: requested.to_owned(),
        devices: list_devices(reports),
    })?;
    check(&reports[position])?;
    Ok(position)
}

fn choose_automatically(reports: &[DeviceReport]) -> DeviceResult<usize> {
    let best = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| missing(r).is_empty())
        .min_by_key(|(_, r)| (r.kind, r.index))
        .map(|(i, _)| i);
    best.ok_or_else(|| DeviceError::NoSuitableDevice {
        devices: reports
            .iter()
            .map(|r| {
                let lacks: Vec<_> = missing(r).iter().map(|req| req.name).collect();
                format!("{}: {} lacks {}", r.index, r.name, lacks.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::report::{ApiVersion, DeviceKind, MemoryHeapInfo, MemoryTypeInfo};

    fn device(index: usize, name: &str, kind: DeviceKind) -> DeviceReport {
        DeviceReport {
            index,
            name: name.into(),
            kind,
            api_version: ApiVersion::new(1, 3, 0),
            driver_version: 1,
            vendor_id: 0x10005,
            device_id: 0,
            driver_name: Some("test".into()),
            driver_info: None,
            compute_queue_family: Some(0),
            shader_int64: true,
            shader_float64: true,
            buffer_device_address: true,
            variable_pointers: true,
            external_memory_host: None,
            portability_subset: false,
            max_storage_buffer_range: 1 << 27,
            max_uniform_buffer_range: 1 << 16,
            max_storage_buffers: 32,
            max_memory_allocation_size: 1 << 31,
            max_push_constants_size: 128,
            max_compute_work_group_count: [65535; 3],
            max_compute_work_group_size: [1024, 1024, 64],
            max_compute_work_group_invocations: 1024,
            min_storage_buffer_offset_alignment: 16,
            memory_types: vec![MemoryTypeInfo {
                flags: HOST_MAPPABLE,
                heap: 0,
            }],
            memory_heaps: vec![MemoryHeapInfo {
                size: 1 << 32,
                flags: vk::MemoryHeapFlags::DEVICE_LOCAL,
            }],
        }
    }

    #[test]
    fn discrete_wins_then_lowest_index() {
        let list = [
            device(0, "llvmpipe (LLVM 15)", DeviceKind::Cpu),
            device(1, "Intel UHD", DeviceKind::Integrated),
            device(2, "Radeon RX", DeviceKind::Discrete),
        ];
        assert_eq!(choose(&list, None).unwrap(), 2);
        assert_eq!(choose(&list[..2], None).unwrap(), 1);
        assert_eq!(choose(&list[..1], Some("")).unwrap(), 0);
    }

    #[test]
    fn unsuitable_devices_are_skipped_automatically() {
        let mut gpu = device(0, "Old GPU", DeviceKind::Discrete);
        gpu.shader_int64 = false;
        let list = [gpu, device(1, "llvmpipe", DeviceKind::Cpu)];
        assert_eq!(choose(&list, None).unwrap(), 1);

        let err = choose(&list[..1], None).unwrap_err();
        assert!(matches!(err, DeviceError::NoSuitableDevice { .. }));
        assert!(
            err.to_string().contains("0: Old GPU lacks shaderInt64"),
            "{err}"
        );
    }

    #[test]
    fn explicit_choice_by_index_or_name() {
        let list = [
            device(0, "llvmpipe (LLVM 15)", DeviceKind::Cpu),
            device(1, "Radeon RX", DeviceKind::Discrete),
        ];
        assert_eq!(choose(&list, Some("0")).unwrap(), 0);
        assert_eq!(choose(&list, Some(" 1 ")).unwrap(), 1);
        assert_eq!(choose(&list, Some("LLVMPIPE")).unwrap(), 0);
        assert_eq!(choose(&list, Some("radeon")).unwrap(), 1);
    }

    #[test]
    fn unknown_choice_lists_the_devices() {
        let list = [device(0, "llvmpipe (LLVM 15)", DeviceKind::Cpu)];
        for bad in ["7", "nvidia"] {
            let err = choose(&list, Some(bad)).unwrap_err();
            assert!(matches!(err, DeviceError::UnknownDevice { .. }));
            let msg = err.to_string();
            assert!(
                msg.contains(bad) && msg.contains("0: llvmpipe (LLVM 15)"),
                "{msg}"
            );
        }
    }

    #[test]
    fn ambiguous_name_is_an_error() {
        let list = [
            device(0, "GPU A", DeviceKind::Discrete),
            device(1, "GPU B", DeviceKind::Discrete),
        ];
        let err = choose(&list, Some("gpu")).unwrap_err();
        assert!(matches!(err, DeviceError::AmbiguousDevice { .. }), "{err}");
    }

    #[test]
    fn explicit_choice_must_meet_requirements() {
        let mut dev = device(0, "Old GPU", DeviceKind::Discrete);
        dev.buffer_device_address = false;
        dev.api_version = ApiVersion::new(1, 1, 0);
        let err = choose(&[dev], Some("0")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DeviceError::MissingFeature { .. }));
        assert!(
            msg.contains("Vulkan 1.2") && msg.contains("bufferDeviceAddress"),
            "{msg}"
        );
        assert!(!msg.contains("shaderInt64"), "{msg}");
    }
}
